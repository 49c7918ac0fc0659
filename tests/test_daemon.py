"""The real daemon (`python -m scimd serve` under waitress) on a loopback port: /health, 401 with
WWW-Authenticate, a bad configuration refused at once in one line, a loud warning when auth is off,
SIGTERM/SIGINT letting an in-flight request finish and closing the database cleanly, SIGHUP
re-reading the token file, data surviving a restart, racing creates, and the JSON access log on
stderr. Every process started here is stopped here."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import orjson
import pytest

from scimd import __version__
from scimd.store import MIGRATIONS
from tests.conftest import TOKEN, Daemon, patch_body

pytestmark = pytest.mark.slow

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
BULK_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SCIM_JSON = "application/scim+json; charset=utf-8"
Spawn = Callable[..., Daemon]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Daemon(data_dir, **env), stopped at teardown even when the test fails half way."""
    spawned: list[Daemon] = []

    def make(data_dir: Path, **env: str) -> Daemon:
        spawned.append(Daemon(data_dir, **env))
        return spawned[-1]

    yield make
    for daemon in spawned:
        daemon.stop()


def stop_and_read(daemon: Daemon, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int | None, str, float]:
    """Signal the daemon, collect all it wrote to stderr, and return (exit code, stderr, seconds to exit)."""
    assert daemon.process is not None
    started = time.monotonic()
    daemon.process.send_signal(sig)
    try:
        _, stderr = daemon.process.communicate(timeout=timeout)
    finally:
        code = daemon.stop()  # kills it if it did not exit; closes the pipes
    return code, stderr.decode("utf-8", "replace"), time.monotonic() - started


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(1024) == b""
    except OSError:
        return True


# -- serving -------------------------------------------------------------------------------------


def test_health_on_the_real_server(daemon: Daemon) -> None:
    status, headers, body = daemon.request("GET", "/health", token=None)
    assert status == 200
    assert body == {"status": "ok", "version": __version__, "storage": "ok"}
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Request-Id"] and headers["Server"] == "scimd"  # waitress, identified as scimd


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no-token", "wrong-token"])
def test_unauthenticated_request_is_a_401_scim_error_with_www_authenticate(daemon: Daemon, token: str | None) -> None:
    status, headers, body = daemon.request("GET", "/scim/v2/Users", token=token)
    assert status == 401
    lowered = {name.lower(): value for name, value in headers.items()}  # waitress writes "Www-Authenticate"
    assert lowered["www-authenticate"] == 'Bearer realm="scimd"'
    assert lowered["content-type"] == SCIM_JSON
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == "401"
    assert daemon.request("GET", "/scim/v2/ServiceProviderConfig", token=token)[0] == 200


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("limited") / "data", SCIM_MAX_BODY_BYTES="2048",
                    SCIM_BULK_MAX_PAYLOAD="4096").start()
    yield daemon
    daemon.stop()


def post_raw(port: int, body: bytes, framing: str) -> tuple[int, str | None, Any]:
    """POST /scim/v2/Users with the body framed by Content-Length or chunked. Headers and body go
    out in one send: a server that refuses early then has nothing unread to reset the connection
    over. "announced" declares a Content-Length but sends no body: the refusal must come from it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", "/scim/v2/Users")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Type", "application/scim+json")
        if framing == "chunked":
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        else:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if framing == "content-length" else None)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), orjson.loads(response.read())
    finally:
        conn.close()


OVERSIZED = [("over-the-endpoint-limit", 3000, "content-length"), ("over-the-endpoint-limit", 3000, "chunked"),
             ("over-every-limit", 10_000, "announced"), ("over-every-limit", 10_000, "chunked")]


@pytest.mark.parametrize(("size", "framing"), [case[1:] for case in OVERSIZED],
                         ids=[f"{c[0]}-{c[2]}" for c in OVERSIZED])
def test_an_oversized_body_is_a_413_scim_error(limited: Daemon, size: int, framing: str) -> None:
    """Also without a Content-Length to refuse it by, and past the server-wide cap (waitress's own refusal)."""
    status, content_type, error = post_raw(limited.port, b'{"userName": "' + b"a" * size + b'"}', framing)
    assert status == 413 and content_type == SCIM_JSON
    assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and error["status"] == "413"
    assert limited.request("GET", "/scim/v2/Users")[2]["totalResults"] == 0


# -- refusing to start ---------------------------------------------------------------------------


BAD_STARTS: list[tuple[str, dict[str, str], int, list[str]]] = [
    ("listen-addr", {"SHOWCASE_LISTEN_ADDR": "8080"}, 2, ["SHOWCASE_LISTEN_ADDR='8080'"]),
    ("base-url", {"SHOWCASE_BASE_URL": "localhost:8080"}, 2, ["SHOWCASE_BASE_URL='localhost:8080'"]),
    ("threads", {"SCIM_THREADS": "lots"}, 2, ["SCIM_THREADS='lots'"]),
    ("looking-glass", {"SCIM_LOOKING_GLASS": "perhaps"}, 2, ["SCIM_LOOKING_GLASS='perhaps'"]),
    ("log-level", {"SCIM_LOG_LEVEL": "chatty"}, 2, ["SCIM_LOG_LEVEL='chatty'"]),
    ("max-body", {"SCIM_MAX_BODY_BYTES": "12"}, 2, ["SCIM_MAX_BODY_BYTES='12'"]),
    ("token-file", {"SCIM_API_TOKEN_FILE": "/nonexistent/tokens"}, 2, ["SCIM_API_TOKEN_FILE=/nonexistent/tokens"]),
]


@pytest.mark.parametrize(("env", "code", "words"), [case[1:] for case in BAD_STARTS], ids=[c[0] for c in BAD_STARTS])
def test_bad_configuration_exits_at_once_with_one_line(spawn: Spawn, tmp_path: Path, env: dict[str, str], code: int,
                                                       words: list[str]) -> None:
    daemon = spawn(tmp_path / "data", **env)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited early") as raised:
        daemon.start()
    assert time.monotonic() - started < 10
    assert daemon.stop() == code
    stderr = str(raised.value).removeprefix("scimd exited early: ")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in stderr


def test_a_newer_database_is_refused_with_a_clear_message(spawn: Spawn, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "scim.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    daemon = spawn(data)
    with pytest.raises(RuntimeError) as raised:
        daemon.start()
    assert daemon.stop() == 1
    [line] = [line for line in str(raised.value).splitlines() if line.strip()]
    assert f"version {len(MIGRATIONS) + 1}" in line and "newer than this scimd understands" in line


def test_auth_disabled_is_a_loud_warning(spawn: Spawn, tmp_path: Path) -> None:
    daemon = spawn(tmp_path / "data", SCIM_API_TOKEN="").start()
    status, _, _ = daemon.request("POST", "/scim/v2/Users", {"userName": "anyone"}, token=None)
    code, stderr, _ = stop_and_read(daemon)
    assert status == 201 and code == 0
    warnings = [line for line in stderr.splitlines() if "SCIM_API_TOKEN" in line]
    assert warnings and "WARNING" in warnings[0] and "open to anyone" in warnings[0]


def test_auth_enabled_has_no_warning(spawn: Spawn, tmp_path: Path) -> None:
    daemon = spawn(tmp_path / "data").start()
    code, stderr, _ = stop_and_read(daemon)
    assert code == 0 and "open to anyone" not in stderr


# -- stopping ------------------------------------------------------------------------------------


def bulk_of_slow_creates(count: int) -> dict[str, Any]:
    """Each password costs a deliberate scrypt hash, so this request keeps a worker busy for seconds."""
    return {"schemas": [BULK_URN], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": f"u{i}",
         "data": {"userName": f"slow{i}", "password": f"pw-{i}-long-enough"}} for i in range(count)]}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_lets_the_in_flight_request_finish_then_exits_0(spawn: Spawn, tmp_path: Path, sig: int) -> None:
    data = tmp_path / "data"
    daemon = spawn(data).start()
    outcome: dict[str, Any] = {}

    def slow_request() -> None:
        outcome["response"] = daemon.request("POST", "/scim/v2/Bulk", bulk_of_slow_creates(40))
        outcome["finished"] = time.monotonic()

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(0.5)  # the request is being processed
    signalled = time.monotonic()
    assert daemon.process is not None
    daemon.process.send_signal(sig)
    time.sleep(0.6)
    refused = refuses_connections(daemon.port)  # no new connections while the old one drains
    worker.join(timeout=30)
    code, _, _ = stop_and_read(daemon, sig)
    exited = time.monotonic()

    status, _, body = outcome["response"]
    assert outcome["finished"] > signalled + 0.6, "the request must still have been running when the signal came"
    assert status == 200 and [op["status"] for op in body["Operations"]] == ["201"] * 40
    assert refused
    assert code == 0 and exited - outcome["finished"] < 5
    assert_closed_cleanly(data / "scim.db")
    restarted = spawn(data).start()
    assert restarted.request("GET", "/scim/v2/Users?count=0")[2]["totalResults"] == 40
    assert restarted.stop() == 0


def assert_closed_cleanly(path: Path) -> None:
    """Every connection closed: the last close checkpointed the WAL and removed it."""
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_idle_daemon_stops_within_seconds(spawn: Spawn, tmp_path: Path, sig: int) -> None:
    daemon = spawn(tmp_path / "data").start()
    daemon.request("POST", "/scim/v2/Users", {"userName": "someone"})
    code, stderr, seconds = stop_and_read(daemon, sig)
    assert code == 0 and seconds < 3, stderr
    assert "Traceback" not in stderr
    assert_closed_cleanly(tmp_path / "data" / "scim.db")


# -- SIGHUP --------------------------------------------------------------------------------------


def write_tokens(path: Path, content: bytes) -> None:
    """Replace the file in one step, as a secret manager or `mv` would."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(content)
    os.replace(staged, path)


def accepted(daemon: Daemon, token: str) -> bool:
    return daemon.request("GET", "/scim/v2/Users?count=0", token=token)[0] == 200


def wait_until(condition: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_sighup_rereads_the_token_file(spawn: Spawn, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    write_tokens(tokens, b"# two during rotation\nfirst-token\nsecond-token\n")
    daemon = spawn(tmp_path / "data", SCIM_API_TOKEN="", SCIM_API_TOKEN_FILE=str(tokens)).start()
    assert daemon.process is not None
    assert accepted(daemon, "first-token") and accepted(daemon, "second-token")
    assert not accepted(daemon, TOKEN)
    write_tokens(tokens, b"third-token\n")
    assert accepted(daemon, "first-token")  # nothing changes before the signal
    daemon.process.send_signal(signal.SIGHUP)
    assert wait_until(lambda: accepted(daemon, "third-token"))
    assert not accepted(daemon, "first-token") and not accepted(daemon, "second-token")
    for unusable in (b"# nothing but a comment\n", b"\xff\xfe"):
        write_tokens(tokens, unusable)
        daemon.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert daemon.process.poll() is None and accepted(daemon, "third-token")  # old tokens kept
    code, stderr, _ = stop_and_read(daemon)
    assert code == 0
    assert "token reload failed" in stderr and "third-token" not in stderr


# -- persistence ---------------------------------------------------------------------------------


def test_data_survives_a_restart(spawn: Spawn, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"SHOWCASE_BASE_URL": "https://scim.example.com"}
    first = spawn(data, **env).start()
    _, _, boss = first.request("POST", "/scim/v2/Users", {"userName": "boss", "displayName": "John Smith"})
    _, _, babs = first.request("POST", "/scim/v2/Users", {
        "schemas": [USER_URN, ENTERPRISE], "userName": "bjensen", "password": "t1meMa$heen", "active": False,
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
        ENTERPRISE: {"department": "Tour Operations", "manager": {"value": boss["id"]}}})
    _, _, inner = first.request("POST", "/scim/v2/Groups",
                                {"displayName": "Inner", "members": [{"value": babs["id"]}]})
    _, _, outer = first.request("POST", "/scim/v2/Groups", {
        "displayName": "Outer", "members": [{"value": inner["id"]}, {"value": boss["id"]}]})
    first.request("PUT", f"/scim/v2/Users/{boss['id']}", {"userName": "boss", "displayName": "John R. Smith"})
    paths = [f"/scim/v2/{kind}/{r['id']}" for kind, r in
             (("Users", boss), ("Users", babs), ("Groups", inner), ("Groups", outer))]
    before = {path: first.request("GET", path)[2] for path in paths}
    assert first.stop() == 0
    second = spawn(data, **env).start()
    after = {path: second.request("GET", path)[2] for path in paths}
    assert after == before
    status, _, _ = second.request("GET", paths[1], headers={"If-None-Match": before[paths[1]]["meta"]["version"]})
    assert status == 304
    assert second.request("POST", "/scim/v2/Users", {"userName": "BJENSEN"})[0] == 409
    listed = second.request("GET", "/scim/v2/Users?filter=" + quote('emails.value eq "BJENSEN@example.com"'))[2]
    assert [r["id"] for r in listed["Resources"]] == [babs["id"]]
    # The stored password hash came through too: sending the same password again changes nothing.
    _, _, same = second.request("PATCH", paths[1], patch_body({"op": "replace", "path": "password",
                                                               "value": "t1meMa$heen"}))
    assert same["meta"]["version"] == before[paths[1]]["meta"]["version"]
    assert second.stop() == 0


def test_racing_creates_on_the_real_server(daemon: Daemon) -> None:
    racers = 16
    barrier = threading.Barrier(racers)

    def race(index: int) -> int:
        barrier.wait()
        return daemon.request("POST", "/scim/v2/Users", {"userName": "Racer" if index % 2 else "racer"})[0]

    with ThreadPoolExecutor(racers) as pool:
        statuses = sorted(pool.map(race, range(racers)))
    assert statuses == [201] + [409] * (racers - 1)


# -- the access log ------------------------------------------------------------------------------


def test_access_log_is_one_json_line_per_request_on_stderr(spawn: Spawn, tmp_path: Path) -> None:
    daemon = spawn(tmp_path / "data", SCIM_LOG_LEVEL="info").start()
    requests = [
        ("log-1", "POST", "/scim/v2/Users", {"userName": "logged", "password": "hunter2-body-secret"}, TOKEN),
        ("log-2", "GET", "/scim/v2/Users?filter=userName%20eq%20%22logged%22&access_token=query-secret", None, TOKEN),
        ("log-3", "GET", "/scim/v2/Users", None, "wrong-token-secret"),
        ("log-4", "GET", "/scim/v2/Nope", None, TOKEN),
    ]
    statuses = [daemon.request(method, path, body, token=token,
                               headers={"X-Request-Id": rid, "User-Agent": "Okta SCIM Client 1.0"})[0]
                for rid, method, path, body, token in requests]
    code, stderr, _ = stop_and_read(daemon)
    assert code == 0 and statuses == [201, 200, 401, 404]
    lines = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = orjson.loads(line)
            assert record["request_id"] not in lines, "one line per request"
            lines[record["request_id"]] = record
    for (rid, method, path, _, _), status in zip(requests, statuses):
        record = lines[rid]
        assert set(record) == {"time", "request_id", "method", "path", "status", "duration_ms", "client", "user_agent"}
        assert (record["method"], record["status"]) == (method, status)
        assert record["client"] == "127.0.0.1" and record["user_agent"] == "Okta SCIM Client 1.0"
        assert isinstance(record["duration_ms"], (int, float))
    assert lines["log-2"]["path"] == "/scim/v2/Users?filter=userName%20eq%20%22logged%22&access_token=[redacted]"
    assert lines["log-1"]["path"] == "/scim/v2/Users"
    for secret in (TOKEN, "Bearer", "hunter2-body-secret", "query-secret", "wrong-token-secret", "Authorization"):
        assert secret not in stderr
