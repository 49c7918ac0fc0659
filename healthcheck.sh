#!/bin/sh
# healthcheck.sh [URL]: exit 0 when scimd's GET /health answers 200 with JSON "status":"ok",
# 1 otherwise (nothing listening, 503, an answer that isn't that JSON, or no answer within 3 s).
#
# Used by the container HEALTHCHECK and usable from cron, monitoring or systemd timers.
# The default URL comes from SHOWCASE_LISTEN_ADDR, as the daemon reads it (default :8080):
#   :8080 / 0.0.0.0:8080 -> http://127.0.0.1:8080/health
#   [::]:8080            -> http://[::1]:8080/health
#   host:8080            -> http://host:8080/health
# The slim image has neither curl nor wget, so the probe is stdlib urllib in the Python that
# runs scimd (/opt/scimd/venv/bin/python when present, else python3/python on PATH).
# Proxy variables are ignored: the probe is always a direct connection.

if [ -x /opt/scimd/venv/bin/python ]; then
    py=/opt/scimd/venv/bin/python
elif command -v python3 >/dev/null 2>&1; then
    py=python3
elif command -v python >/dev/null 2>&1; then
    py=python
else
    echo "unhealthy: no python to run the probe" >&2
    exit 1
fi

# -I: ignore PYTHON* variables, the user site and the current directory (nothing to import
# from, nothing to write). Docker reserves exit code 2, so every failure is 1.
exec "$py" -I -c '
import json, os, signal, sys, urllib.error, urllib.request

DEADLINE = 3  # seconds for the whole probe, connect to last byte


def fail(url, reason):
    print(f"unhealthy: {url}: {reason}", file=sys.stderr)
    sys.exit(1)


def default_url():
    addr = os.environ.get("SHOWCASE_LISTEN_ADDR", "").strip() or ":8080"
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        fail(addr, "SHOWCASE_LISTEN_ADDR is not host:port, :port or [v6]:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("::", "::0"):
        host = "::1"
    if ":" in host:
        host = "[" + host.replace("%", "%25") + "]"
    return f"http://{host}:{port}/health"


def on_alarm(signum, frame):
    raise TimeoutError(f"no complete answer within {DEADLINE} s")


url = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else default_url()
signal.signal(signal.SIGALRM, on_alarm)
signal.alarm(DEADLINE)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with opener.open(request, timeout=DEADLINE) as response:
        status, body = response.status, response.read(65536)
except urllib.error.HTTPError as exc:
    fail(url, f"HTTP {exc.code}")
except Exception as exc:  # refused, timeout, reset, not HTTP at all, bad URL: all unhealthy
    fail(url, getattr(exc, "reason", None) or repr(exc))
finally:
    signal.alarm(0)
if status != 200:
    fail(url, f"HTTP {status}")
try:
    document = json.loads(body)
except ValueError:
    fail(url, "answer is not JSON")
reported = document.get("status") if isinstance(document, dict) else None
if reported != "ok":
    fail(url, f"status is {reported!r}")
text = body.decode("utf-8", "replace").strip()
print(f"healthy: {url}: {text[:200]}")
' "${1:-}"
