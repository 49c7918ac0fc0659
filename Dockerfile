# syntax=docker/dockerfile:1
#
# scimd container image: two stages on the same pinned Debian slim Python.
#
#   docker build -t scimd .
#   docker run -d --name scimd --read-only --tmpfs /tmp \
#       -p 8080:8080 -e SCIM_API_TOKEN=... -v scimd-data:/app/data scimd
#
# The builder makes a venv at /opt/scimd/venv (dependencies first, so that editing the source
# doesn't reinstall them), byte-compiles it and drops pip; the runtime copies that venv
# wholesale. The venv path and the base image must be identical in both stages, because the
# venv's python is a symlink to the base image's interpreter.
# Bump the base tag on purpose (both FROM lines), never to a floating tag.

FROM python:3.12.15-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/scimd/venv

WORKDIR /src

# Dependency layer: the runtime dependencies read from pyproject.toml, installed before any
# source is copied, so this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && /opt/scimd/venv/bin/pip install --requirement /tmp/requirements.txt

# Application layer. README.md (the wheel's long description) is left out on purpose: setuptools
# only warns without it, and the image has no use for it.
COPY scimd/ ./scimd/
# Then drop pip from the venv and byte-compile everything: the runtime root filesystem is
# read-only. unchecked-hash .pyc files stay valid whatever mtimes COPY gives the sources (the
# image is immutable). The last line is a smoke test of the console script.
RUN /opt/scimd/venv/bin/pip install --no-deps --no-compile . \
    && /opt/scimd/venv/bin/pip uninstall --yes pip setuptools wheel \
    && find /opt/scimd/venv -depth -type d -name __pycache__ -exec rm -rf {} + \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/scimd/venv/lib \
    && /opt/scimd/venv/bin/scimd --help > /dev/null


FROM python:3.12.15-slim-bookworm AS runtime

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="scimd" \
      org.opencontainers.image.description="SCIM 2.0 server (RFC 7643/7644, RFC 9865 cursors) on SQLite" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12.15-slim-bookworm"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/scimd/venv/bin:$PATH \
    SCIM_DATA_DIR=/app/data \
    SHOWCASE_LISTEN_ADDR=:8080

# A fixed uid/gid so that volume ownership is predictable across rebuilds and hosts.
# Byte-compile the standard library too (compileall skips modules that already have a .pyc;
# the official images have shipped it without them), so that a --read-only container doesn't
# recompile it in memory at every start. The system pip is not needed at run time.
RUN groupadd --system --gid 10001 scimd \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin scimd \
    && install -d -o 10001 -g 10001 -m 0700 /app/data \
    && python -m compileall -q -j 0 -x '/(test|tests|idle_test|site-packages)/' \
        /usr/local/lib/python3.12 \
    && python -m pip uninstall --yes pip

COPY --from=builder /opt/scimd/venv /opt/scimd/venv
COPY --chmod=0755 healthcheck.sh /usr/local/bin/healthcheck.sh

WORKDIR /app
USER 10001:10001

# SQLite writes scim.db plus its -wal/-shm files here: the directory must be writable.
VOLUME ["/app/data"]
EXPOSE 8080

# healthcheck.sh probes GET /health with the stdlib (the slim image has neither curl nor
# wget) and gives up after 3 s, inside the 5 s timeout.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/healthcheck.sh"]

# scimd drains requests, closes SQLite and exits 0 on SIGTERM; allow it 30 s with
# `docker stop -t 30` / compose `stop_grace_period: 30s` (Docker's default is 10 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/scimd/venv/bin/scimd"]
CMD ["serve"]
