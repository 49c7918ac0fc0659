"""Deployment files: Dockerfile, .dockerignore, healthcheck.sh and the systemd unit.

No Docker engine or running systemd is needed. The Dockerfile and the unit are parsed and
checked instruction by instruction; healthcheck.sh runs for real against stub HTTP servers on
127.0.0.1 (the real daemon is exercised elsewhere); `systemd-analyze` checks the unit when it
is installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HEALTHCHECK = ROOT / "healthcheck.sh"
UNIT = ROOT / "systemd" / "scimd.service"
ENV_EXAMPLE = ROOT / "systemd" / "scimd.env.example"
VENV = "/opt/scimd/venv"


# --- Dockerfile --------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased
    args: str  # continuation lines joined, embedded comment lines dropped
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, None for shell form."""
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None

    def flags(self) -> tuple[dict[str, str], str]:
        """Leading `--name=value` flags (COPY --from, HEALTHCHECK --interval) and the rest."""
        found: dict[str, str] = {}
        rest = self.args
        while match := re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest):
            found[match[1]] = match[2] or ""
            rest = rest[match.end():]
        return found, rest


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, as the Docker frontend reads them (default `\\` escape, no heredocs).

    A line ending in a backslash continues on the next line; comment lines, including those
    inside a continued instruction, are dropped; parser directives are comments here.
    """
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        logical = " ".join(part for part in parts if part)
        parts = []
        keyword, _, args = logical.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not parts, "Dockerfile ends inside a continued instruction"
    return instructions


def split_stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"line {instruction.line}: {instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


def env_pairs(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                name, sep, value = word.partition("=")
                assert sep, f"line {instruction.line}: use ENV name=value, not the legacy form"
                values[name] = value
    return values


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return split_stages(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def runtime(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the stage, found {len(found)}"
    return found[0]


def test_parser_joins_continuations_and_drops_embedded_comments() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM a AS b\n\nRUN one \\\n# note\n    && two\nCMD [\"x\"]\n"
    parsed = parse_dockerfile(text)
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("FROM", "a AS b", 2), ("RUN", "one && two", 4), ("CMD", '["x"]', 7)]
    assert parsed[2].exec_form() == ["x"] and parsed[1].exec_form() is None


def test_stages_share_one_pinned_slim_base(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2, "multi-stage build expected (builder + runtime)"
    bases = [stage[0].args.split()[0] for stage in stages]
    assert len(set(bases)) == 1, f"every stage must use the same base (the venv links to it): {bases}"
    # python:3.X.Y-slim[-debian], optionally pinned further by digest; never latest or 3.X-slim
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", bases[0]), bases[0]
    assert "latest" not in bases[0]


def test_builder_installs_dependencies_before_the_source(stages: list[list[Instruction]]) -> None:
    builder = stages[0]
    copies = [i.args for i in builder if i.keyword == "COPY"]
    runs = [i for i in builder if i.keyword == "RUN"]
    assert copies[0].split()[0] == "pyproject.toml", "the first COPY must be pyproject.toml only"
    source_at = next(i.line for i in builder if i.keyword == "COPY" and "scimd/" in i.args)
    dependencies_at = next(i.line for i in runs if "requirements" in i.args or "dependencies" in i.args)
    assert dependencies_at < source_at
    assert any(f"venv {VENV}" in i.args for i in runs), f"the builder creates its venv at {VENV}"
    assert env_pairs(builder).get("PIP_NO_CACHE_DIR") == "1"


def test_builder_byte_compiles_and_drops_pip(stages: list[list[Instruction]]) -> None:
    script = " ".join(i.args for i in stages[0] if i.keyword == "RUN")
    assert re.search(r"python -m compileall .*" + re.escape(VENV), script)
    assert re.search(r"pip uninstall --yes pip", script)


def test_runtime_copies_only_the_venv_and_the_probe(stages: list[list[Instruction]], runtime: list[Instruction]) -> None:
    builder_name = stages[0][0].args.split()[-1]
    copies = [i.flags() for i in runtime if i.keyword == "COPY"]
    assert ({"from": builder_name}, f"{VENV} {VENV}") in copies
    assert any(rest == "healthcheck.sh /usr/local/bin/healthcheck.sh" and flags.get("chmod") == "0755"
               for flags, rest in copies)
    assert len(copies) == 2, "the runtime gets nothing but the venv and healthcheck.sh"


def test_runtime_user_is_fixed_and_not_root(runtime: list[Instruction]) -> None:
    user = [i for i in runtime if i.keyword == "USER"]
    assert user, "the runtime stage must switch to a non-root USER"
    assert user[-1].args.split(":")[0] == "10001"
    assert user[-1].args in ("10001", "10001:10001")
    setup = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert "--uid 10001" in setup and "--gid 10001" in setup


def test_runtime_data_volume(runtime: list[Instruction]) -> None:
    volume = only(runtime, "VOLUME")
    assert (volume.exec_form() or volume.args.split()) == ["/app/data"]
    setup = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert re.search(r"install -d -o 10001 -g 10001 -m 0700 /app/data", setup)
    made_at = next(i.line for i in runtime if i.keyword == "RUN" and "/app/data" in i.args)
    assert made_at < volume.line, "the directory must exist with its owner before VOLUME"


def test_runtime_environment(runtime: list[Instruction]) -> None:
    env = env_pairs(runtime)
    assert env["SCIM_DATA_DIR"] == "/app/data"
    assert env["SHOWCASE_LISTEN_ADDR"] == ":8080"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PIP_NO_CACHE_DIR"] == "1"


def test_runtime_exposes_8080(runtime: list[Instruction]) -> None:
    assert only(runtime, "EXPOSE").args.split() in (["8080"], ["8080/tcp"])


def test_healthcheck_instruction(runtime: list[Instruction]) -> None:
    flags, rest = only(runtime, "HEALTHCHECK").flags()
    command = rest.removeprefix("CMD").strip()
    assert json.loads(command) == ["/usr/local/bin/healthcheck.sh"], "exec form, no shell needed"
    assert set(flags) >= {"interval", "timeout", "start-period", "retries"}
    seconds = {name: int(flags[name].removesuffix("s")) for name in ("interval", "timeout", "start-period")}
    assert 3 < seconds["timeout"] <= 10, "the probe gives up after 3 s; Docker's timeout must be longer"
    assert seconds["interval"] >= seconds["timeout"]
    assert 1 <= int(flags["retries"]) <= 5


def test_stop_signal_and_entrypoint(runtime: list[Instruction]) -> None:
    assert only(runtime, "STOPSIGNAL").args == "SIGTERM"
    assert only(runtime, "ENTRYPOINT").exec_form() == [f"{VENV}/bin/scimd"], "exec form: scimd is PID 1"
    assert only(runtime, "CMD").exec_form() == ["serve"]


def test_runtime_has_oci_labels(runtime: list[Instruction]) -> None:
    labels = " ".join(i.args for i in runtime if i.keyword == "LABEL")
    for key in ("title", "description", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels


@pytest.mark.parametrize("tool", ["gcc", "build-essential", "curl", "wget", "apt-get install", "apk add"])
def test_runtime_installs_no_build_or_fetch_tools(runtime: list[Instruction], tool: str) -> None:
    for instruction in runtime:
        if instruction.keyword == "RUN":
            assert tool not in instruction.args, f"line {instruction.line}: {tool} in the runtime stage"


# --- .dockerignore -----------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per line, with the Go filepath.Match + `**` rules Docker uses."""
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?|\[[^\]]*\])", line):
            if token == "**/":
                regex += "(?:.*/)?"
            elif token == "**":
                regex += ".*"
            elif token == "*":
                regex += "[^/]*"
            elif token == "?":
                regex += "[^/]"
            elif token.startswith("["):
                regex += token
            else:
                regex += re.escape(token)
        patterns.append((negated, re.compile(regex)))
    return patterns


def ignored(path: str) -> bool:
    """Whether the build context leaves `path` out: the last matching pattern wins, and a
    pattern matching a parent directory covers everything below it."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, pattern in dockerignore_patterns():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".git/objects/ab/cdef", "data/scim.db", "data/scim.db-wal", "scim.db",
    "scim.db-shm", "sub/dir/old.db", ".venv/bin/python", "venv/pyvenv.cfg",
    "scimd/__pycache__/app.cpython-312.pyc", ".pytest_cache/v/cache", ".hypothesis/examples/x",
    "tests/test_deploy.py", "bench/results/run.json", ".coverage", "build/lib/scimd/app.py",
    "scimd.egg-info/PKG-INFO", ".env",
])
def test_dockerignore_keeps_out(path: str) -> None:
    assert ignored(path), f"{path} would be sent to the Docker build context"


def test_dockerignore_keeps_what_the_build_copies(stages: list[list[Instruction]]) -> None:
    sources: list[str] = []
    for stage in stages:
        for instruction in stage:
            flags, rest = instruction.flags()
            if instruction.keyword in ("COPY", "ADD") and "from" not in flags:
                sources += rest.split()[:-1]
    assert sources, "no COPY from the build context?"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which is missing"
        files = [path] if path.is_file() else [
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not ignored(relative), f".dockerignore drops {relative}, which the build copies"


# --- healthcheck.sh ----------------------------------------------------------------------


class _StubHandler(BaseHTTPRequestHandler):
    server: _StubServer

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.server.paths.append(self.path)
        status, body = self.server.reply
        if status is None:  # not HTTP at all
            self.wfile.write(body)
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    reply: tuple[int | None, bytes]
    paths: list[str]


@contextmanager
def stub_server(status: int | None, body: bytes) -> Iterator[_StubServer]:
    """An HTTP server on a free 127.0.0.1 port answering every GET with (status, body)."""
    server = _StubServer(("127.0.0.1", 0), _StubHandler)
    server.reply, server.paths = (status, body), []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog does) and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]
    finally:
        listener.close()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_healthcheck(*args: str, listen: str | None = None, shell: str | None = None,
                    extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHOWCASE_LISTEN_ADDR"}
    # the test's Python first on PATH, as the image's venv python would be
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if listen is not None:
        env["SHOWCASE_LISTEN_ADDR"] = listen
    env.update(extra_env or {})
    command = [shell, str(HEALTHCHECK)] if shell else [str(HEALTHCHECK)]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=15)


OK_BODY = json.dumps({"status": "ok", "version": "0.1.0", "storage": "ok"}).encode()


def test_healthcheck_is_executable_posix_sh() -> None:
    assert os.access(HEALTHCHECK, os.X_OK), "git update-index --chmod=+x healthcheck.sh"
    assert HEALTHCHECK.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    for shell in ("sh", "dash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n", str(HEALTHCHECK)], check=True)
    code = [line for line in HEALTHCHECK.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if re.search(r"\b(curl|wget)\b", line)], "the slim image has neither"


def test_healthcheck_is_executable_in_git() -> None:
    if not (ROOT / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "--stage", "healthcheck.sh"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    if not listed:
        pytest.skip("healthcheck.sh is not committed yet")
    assert listed.startswith("100755 "), listed


@pytest.mark.parametrize("shell", [None, "dash"], ids=["shebang", "dash"])
def test_healthy_answer_exits_0(shell: str | None) -> None:
    if shell and not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    with stub_server(200, OK_BODY) as server:
        result = run_healthcheck(f"http://127.0.0.1:{server.server_port}/health", shell=shell)
    assert result.returncode == 0, result.stderr
    assert server.paths == ["/health"]
    assert "healthy" in result.stdout


@pytest.mark.parametrize(("status", "body"), [
    (503, json.dumps({"status": "unavailable", "storage": "database is locked"}).encode()),
    (500, b'{"status":"ok"}'),
    (200, json.dumps({"status": "degraded"}).encode()),
    (200, b'{"status": "OK"}'),
    (200, b"<html>ok</html>"),
    (200, b'["ok"]'),
    (200, b""),
    (None, b"garbage that is not HTTP\r\n\r\n"),
], ids=["503", "500", "degraded", "wrong-case", "html", "array", "empty", "not-http"])
def test_unhealthy_answer_exits_1(status: int | None, body: bytes) -> None:
    with stub_server(status, body) as server:
        result = run_healthcheck(f"http://127.0.0.1:{server.server_port}/health")
    assert result.returncode == 1, (result.stdout, result.stderr)  # never 2: Docker reserves it
    assert "unhealthy" in result.stderr


def test_silent_server_times_out_quickly() -> None:
    with silent_server() as port:
        started = time.monotonic()
        result = run_healthcheck(f"http://127.0.0.1:{port}/health")
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert 2 <= elapsed < 5, f"took {elapsed:.1f} s"
    assert "unhealthy" in result.stderr


def test_nothing_listening_exits_1() -> None:
    result = run_healthcheck(f"http://127.0.0.1:{closed_port()}/health")
    assert result.returncode == 1
    assert "refused" in result.stderr.lower()


def test_proxy_variables_are_ignored() -> None:
    with stub_server(200, OK_BODY) as server:
        result = run_healthcheck(f"http://127.0.0.1:{server.server_port}/health", extra_env={
            "http_proxy": f"http://127.0.0.1:{closed_port()}", "HTTP_PROXY": f"http://127.0.0.1:{closed_port()}",
            "no_proxy": "", "NO_PROXY": ""})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("form", [":{port}", "127.0.0.1:{port}", "0.0.0.0:{port}"])
def test_default_url_from_listen_addr(form: str) -> None:
    with stub_server(200, OK_BODY) as server:
        result = run_healthcheck(listen=form.format(port=server.server_port))
    assert result.returncode == 0, result.stderr
    assert f"http://127.0.0.1:{server.server_port}/health" in result.stdout
    assert server.paths == ["/health"]


@pytest.mark.parametrize(("form", "url"), [
    ("[::]:{port}", "http://[::1]:{port}/health"),
    ("[::1]:{port}", "http://[::1]:{port}/health"),
    ("localhost:{port}", "http://localhost:{port}/health"),
    ("[fe80::1]:{port}", "http://[fe80::1]:{port}/health"),
])
def test_default_url_for_other_hosts(form: str, url: str) -> None:
    # nothing listens there (the port is free on 127.0.0.1 and the address is unused): the
    # failure message names the URL that was probed
    port = closed_port()
    result = run_healthcheck(listen=form.format(port=port))
    assert result.returncode == 1
    assert url.format(port=port) in result.stderr


def test_default_url_without_listen_addr_is_port_8080() -> None:
    # something may listen on 8080 on this machine, so either outcome is fine: the URL matters
    result = run_healthcheck()
    assert "http://127.0.0.1:8080/health" in result.stdout + result.stderr


@pytest.mark.parametrize("form", ["8080", "host:", "[::]", "host:port"])
def test_bad_listen_addr_exits_1(form: str) -> None:
    result = run_healthcheck(listen=form)
    assert result.returncode == 1
    assert "SHOWCASE_LISTEN_ADDR" in result.stderr


# --- systemd unit ------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) pairs in order; keys may repeat (Environment=, SystemCallFilter=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


SERVICE_SETTINGS = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecStart": f"{VENV}/bin/scimd serve",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "TimeoutStopSec": "30",
    "TimeoutStartSec": "600",
    "Restart": "on-failure",
    "RestartSec": "2",
    "DynamicUser": "yes",
    "StateDirectory": "scimd",
    "StateDirectoryMode": "0700",
    "UMask": "0077",
    "LoadCredential": "scimd-token:/etc/scimd/token",
    "EnvironmentFile": "-/etc/scimd/scimd.env",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallArchitectures": "native",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RemoveIPC": "yes",
}


@pytest.mark.parametrize(("key", "expected"), SERVICE_SETTINGS.items(), ids=SERVICE_SETTINGS.keys())
def test_service_setting(unit: dict[str, list[tuple[str, str]]], key: str, expected: str) -> None:
    assert values(unit, "Service", key) == [expected]


def test_system_call_filter(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert values(unit, "Service", "SystemCallFilter") == ["@system-service", "~@privileged @resources"]


def test_environment_points_at_state_and_credential(unit: dict[str, list[tuple[str, str]]]) -> None:
    environment = dict(value.partition("=")[::2] for value in values(unit, "Service", "Environment"))
    assert environment["SCIM_DATA_DIR"] == "%S/scimd"
    credential = values(unit, "Service", "LoadCredential")[0].partition(":")[0]
    assert environment["SCIM_API_TOKEN_FILE"] == f"%d/{credential}"


def test_install_section(unit: dict[str, list[tuple[str, str]]]) -> None:
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_env_example_documents_every_variable() -> None:
    """Every variable config.py reads is named in scimd.env.example."""
    source = (ROOT / "scimd" / "config.py").read_text(encoding="utf-8")
    variables = set(re.findall(r'"((?:SCIM|SHOWCASE)_[A-Z_]+)"', source))
    assert {"SHOWCASE_LISTEN_ADDR", "SCIM_API_TOKEN", "SCIM_DATA_DIR"} <= variables
    documented = set(re.findall(r"^#?((?:SCIM|SHOWCASE)_[A-Z_]+)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))
    assert variables <= documented, f"undocumented: {sorted(variables - documented)}"


@pytest.fixture()
def verifiable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at a binary that exists here.

    `systemd-analyze verify` fails when ExecStart's binary is missing, and scimd is not
    installed at /opt/scimd on a test machine; everything else is verified as shipped.
    """
    stand_in = shutil.which("true")
    assert stand_in
    text = UNIT.read_text(encoding="utf-8")
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={stand_in}", text, flags=re.M)
    if not os.access("/bin/kill", os.X_OK):
        text = re.sub(r"^ExecReload=\S+", f"ExecReload={stand_in}", text, flags=re.M)
    path = tmp_path / UNIT.name
    path.write_text(text, encoding="utf-8")
    return path


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return path


def test_systemd_analyze_verify(verifiable_unit: Path) -> None:
    result = subprocess.run([systemd_analyze(), "verify", "--man=no", str(verifiable_unit)],
                            capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_systemd_analyze_security_exposure(verifiable_unit: Path) -> None:
    """The sandbox scores "OK" or better (exposure <= 2.0 of 10); docs/deployment-security.txt
    holds the full report."""
    result = subprocess.run([systemd_analyze(), "security", "--offline=yes", "--threshold=20",
                             "--no-pager", str(verifiable_unit)], capture_output=True, text=True, timeout=60)
    verdict = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert verdict, result.stdout + result.stderr
    assert result.returncode == 0, verdict[0]
    assert float(verdict[1]) <= 2.0


@pytest.mark.slow
def test_healthcheck_against_the_real_daemon_live_then_stopped(tmp_path: Path) -> None:
    """The probe the container runs, against scimd itself: 0 while it serves, non-zero once stopped,
    and the default URL comes from SHOWCASE_LISTEN_ADDR as in the image."""
    from tests.conftest import Daemon

    daemon = Daemon(tmp_path / "data").start()
    try:
        live = run_healthcheck(f"{daemon.base}/health")
        by_env = run_healthcheck(listen=f":{daemon.port}")
    finally:
        assert daemon.stop() == 0
    stopped = run_healthcheck(f"{daemon.base}/health")
    assert live.returncode == 0, live.stderr
    assert by_env.returncode == 0, by_env.stderr
    assert stopped.returncode != 0
