"""Resource limits: idle and slow (slowloris) connections cannot lock a real client out of the
daemon, a request must arrive whole within SCIM_CHANNEL_TIMEOUT, bodies over the limit are
refused from their Content-Length before they are sent (and never read into memory), and the
optional per-client rate limit (SCIM_RATE_LIMIT)."""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from werkzeug.test import create_environ, run_wsgi_app

from tests.conftest import AUTH, ERROR_URN, TOKEN, Daemon, ScimClient, assert_scim_error, make_app

REQUEST_HEAD = "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"


@contextmanager
def running(tmp_path: Path, **env: str) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path / "data", **env).start()
    try:
        yield daemon
    finally:
        daemon.stop()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return what comes back until the server closes (or the response is whole).

    A server that answers early and closes may reset the connection while we still send: what
    arrived before the reset is the answer.
    """
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not _whole(received):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return received


def _whole(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers, body


def assert_raw_scim_error(raw: bytes, status: int) -> dict[str, Any]:
    """The daemon answers with a SCIM Error body even where waitress itself refuses the request."""
    code, headers, body = parse_response(raw)
    assert code == status, raw[:300]
    assert headers["content-type"].startswith("application/scim+json")
    document = orjson.loads(body)
    assert document["schemas"] == [ERROR_URN] and document["status"] == str(status) and document["detail"]
    return document


def timed_get(daemon: Daemon, path: str, timeout: float = 5.0) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=AUTH)
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


def closed_by_peer(sock: socket.socket, wait: float) -> bool:
    """True when the server has closed this connection (EOF or reset) within `wait` seconds."""
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except OSError:
        return True


# -- idle and slow connections -----------------------------------------------------------------


class Slowloris:
    """`count` connections: half idle (nothing sent), half sending a header byte every second and
    never finishing the request. A connection the server closes is opened again, so the attack
    lasts until stop()."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.idle = [self._connect(b"") for _ in range(count // 2)]
        self.slow = [self._connect(b"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\n") for _ in range(count - count // 2)]
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def _connect(self, first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if first:
            sock.sendall(first)
        return sock

    def _trickle(self) -> None:
        deadline = time.monotonic() + 30  # a bound even if stop() is never reached
        while not self._stop.wait(1.0) and time.monotonic() < deadline:
            for index, sock in enumerate(self.slow):
                try:
                    sock.send(b"X")
                except OSError:
                    sock.close()
                    try:
                        self.slow[index] = self._connect(b"GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\n")
                        self.reopened += 1
                    except OSError:
                        pass

    def __enter__(self) -> Slowloris:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.idle + self.slow:
            sock.close()


@pytest.mark.slow
def test_idle_and_slow_connections_do_not_lock_out_a_real_client(tmp_path: Path) -> None:
    """150 idle or trickling connections against a limit of 40: waitress alone stops accepting at
    the limit, and a trickle resets its channel_timeout, so the real client waited forever."""
    with running(tmp_path, SCIM_CONNECTION_LIMIT="40", SCIM_CHANNEL_TIMEOUT="5", SCIM_THREADS="4") as daemon:
        with Slowloris(daemon.port, 150) as attack:
            timings = []
            for _ in range(5):
                time.sleep(0.8)
                status, elapsed = timed_get(daemon, "/scim/v2/Users")
                assert status == 200
                timings.append(elapsed)
            assert max(timings) < 2.0, timings
            # The attack really filled the limit: the server made room by closing attackers.
            assert attack.reopened > 0 or any(closed_by_peer(sock, 0) for sock in attack.idle)


@pytest.mark.slow
def test_a_request_trickled_byte_by_byte_is_cut_off_after_the_channel_timeout(tmp_path: Path) -> None:
    with running(tmp_path, SCIM_CHANNEL_TIMEOUT="2") as daemon:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=2) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            closed = False
            while not closed and time.monotonic() - started < 8:
                try:
                    sock.send(b"X")
                except OSError:
                    closed = True
                    break
                closed = closed_by_peer(sock, 0.25)
            elapsed = time.monotonic() - started
        assert closed, "a trickling request held its connection for 8 s"
        # channel_timeout 2 s, checked every second (cleanup_interval).
        assert 1.5 <= elapsed < 5, elapsed
        assert timed_get(daemon, "/health")[0] == 200


@pytest.mark.slow
def test_idle_keep_alive_connections_are_closed_after_the_channel_timeout(tmp_path: Path) -> None:
    with running(tmp_path, SCIM_CHANNEL_TIMEOUT="2") as daemon:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=2) as sock:
            started = time.monotonic()
            assert not closed_by_peer(sock, 1.0)
            deadline = started + 8
            while time.monotonic() < deadline and not closed_by_peer(sock, 0.25):
                pass
            assert time.monotonic() < deadline, "an idle connection was kept for 8 s"


# -- request bodies over the limit -----------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/scim/v2/Users"), ("POST", "/scim/v2/Bulk"), ("PUT", "/scim/v2/Users/x"),
    ("PATCH", "/scim/v2/Groups/x"), ("POST", "/scim/v2/.search"),
])
def test_a_body_over_the_limit_is_refused_from_content_length_before_it_is_sent(
        daemon: Daemon, method: str, path: str) -> None:
    head = (REQUEST_HEAD.format(method=method, path=path, token=TOKEN)
            + "Content-Type: application/scim+json\r\nContent-Length: 1000000000000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(head)  # and not one byte of the body
        started = time.monotonic()
        received = b""
        while not _whole(received) and time.monotonic() - started < 5:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        assert time.monotonic() - started < 2
        assert closed_by_peer(sock, 2), "the connection stays open for the refused body"
    assert_raw_scim_error(received, 413)


@pytest.mark.slow
def test_a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    """waitress refuses a body of max_request_body_size bytes *or more*: the limit is inclusive."""
    limits = {"SCIM_MAX_BODY_BYTES": "4096", "SCIM_BULK_MAX_PAYLOAD": "4096"}
    with running(tmp_path, **limits) as daemon:
        for size, status in ((4096, 201), (4097, 413)):
            padding = size - len(orjson.dumps({"userName": ""}))
            body = orjson.dumps({"userName": f"u{size}".ljust(padding, "x")})
            assert len(body) == size
            head = (REQUEST_HEAD.format(method="POST", path="/scim/v2/Users", token=TOKEN)
                    + f"Content-Type: application/scim+json\r\nContent-Length: {size}\r\n\r\n").encode()
            raw = raw_exchange(daemon.port, head + body)
            if status == 201:
                assert parse_response(raw)[0] == 201, raw[:300]
            else:
                assert_raw_scim_error(raw, 413)


def test_a_chunked_body_over_the_limit_is_refused(tmp_path: Path) -> None:
    with running(tmp_path, SCIM_MAX_BODY_BYTES="4096", SCIM_BULK_MAX_PAYLOAD="4096") as daemon:
        chunk = b"x" * 1024
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
        head = (REQUEST_HEAD.format(method="POST", path="/scim/v2/Users", token=TOKEN)
                + "Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        assert_raw_scim_error(raw_exchange(daemon.port, head + chunks), 413)
        assert daemon.request("GET", "/scim/v2/Users")[2]["totalResults"] == 0


class Unreadable:
    """A request body stream that records any attempt to read it."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, *args: Any) -> bytes:
        self.reads += 1
        return b"{}"

    readline = read

    def __iter__(self) -> Iterator[bytes]:
        self.reads += 1
        return iter([b"{}"])


@pytest.mark.parametrize("looking_glass", ["false", "true"])
@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/scim/v2/Users"), ("POST", "/scim/v2/Bulk"), ("PATCH", "/scim/v2/Groups/x"),
    ("POST", "/scim/v2/Users/.search"),
])
def test_the_app_refuses_an_oversized_body_without_reading_it(tmp_path: Path, looking_glass: str, method: str,
                                                              path: str) -> None:
    """Also behind a server that hands the app an unread stream (and with the Looking Glass,
    which copies request bodies, switched on)."""
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS=looking_glass)
    try:
        environ = create_environ(path, method=method, headers=AUTH, content_type="application/scim+json")
        stream = Unreadable()
        environ.update({"wsgi.input": stream, "CONTENT_LENGTH": str(10**12)})
        body_iter, status, headers = run_wsgi_app(app, environ)
        body = b"".join(body_iter)
        assert status.startswith("413"), body
        assert orjson.loads(body)["status"] == "413"
        assert stream.reads == 0
    finally:
        store.close()


# -- rate limit ----------------------------------------------------------------------------------


def _from(client: ScimClient, address: str) -> Any:
    return client.get("/scim/v2/Users", environ_overrides={"REMOTE_ADDR": address})


def test_there_is_no_rate_limit_by_default(client: ScimClient) -> None:
    assert {_from(client, "10.0.0.1").status_code for _ in range(60)} == {200}


def test_the_rate_limit_answers_429_per_client_address(tmp_path: Path) -> None:
    app, store = make_app(tmp_path, SCIM_RATE_LIMIT="2")
    client = ScimClient(app)
    try:
        # A burst of one second's worth (2 requests), then 429 until a token comes back.
        assert [_from(client, "10.0.0.1").status_code for _ in range(2)] == [200, 200]
        limited = _from(client, "10.0.0.1")
        assert_scim_error(limited, 429)
        assert int(limited.headers["Retry-After"]) >= 1
        # Another client is not affected, unauthenticated requests are limited too.
        assert _from(client, "10.0.0.2").status_code == 200
        assert client.get("/scim/v2/Users", auth=False, environ_overrides={"REMOTE_ADDR": "10.0.0.1"}
                          ).status_code == 429
        time.sleep(0.6)  # 2 requests/s: one token back after 0.5 s
        assert _from(client, "10.0.0.1").status_code == 200
    finally:
        store.close()
