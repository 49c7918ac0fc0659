"""Serving: waitress with a bounded thread pool and connection limits, graceful shutdown on
SIGTERM/SIGINT, token reload on SIGHUP, and systemd readiness notification."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import orjson
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask

from scimd import errors
from scimd.config import Config, ConfigError

log = logging.getLogger("scimd")


def notify_systemd(state: str) -> None:
    """sd_notify(3) with the stdlib: a datagram to $NOTIFY_SOCKET when systemd asked for one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd: %s", exc)


class _ErrorTask(ErrorTask):
    """waitress's own refusals (a bad request line, a body over the limit, headers too large),
    sent as SCIM Error bodies like every other error (RFC 7644 §3.12)."""

    DETAILS = {413: "The request body is larger than this server accepts.",
               431: "The request header fields are too large."}

    def execute(self) -> None:
        refusal = self.request.error
        error = errors.ScimError(self.DETAILS.get(refusal.code, f"{refusal.reason}: {refusal.body}."))
        error.status = refusal.code
        body = orjson.dumps(error.to_json())
        self.status = f"{refusal.code} {refusal.reason}"
        self.response_headers.append(("Content-Type", "application/scim+json; charset=utf-8"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    """A connection that remembers when the request it is still receiving began, so a client
    that trickles bytes (slowloris) cannot hold it forever: waitress's channel_timeout counts
    only silence, and every byte resets it."""

    error_task_class = _ErrorTask
    request_started: float | None = None  # time.time() of the first byte of an incomplete request

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.time()
        result: bool = super().received(data)
        if self.request is None:
            self.request_started = None
        return result

    def waiting_since(self) -> float | None:
        """When this connection began waiting on its client, or None while it has work in hand
        (a request in a worker, a response to flush) or is closing already."""
        if self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed:
            return None
        return self.request_started if self.request is not None else self.last_activity


class _Server(TcpWSGIServer):
    """waitress's TCP server with two defences of the connection limit
    (pitfalls: waitress connection_limit, channel_timeout):

    - a request must arrive whole within channel_timeout of its first byte;
    - at the limit, a new connection takes the place of the one that has waited longest on its
      client (idle keep-alive or a request still arriving), as nginx reuses idle keep-alive
      connections; only when every connection has work in hand does accepting pause.
    """

    channel_class = _Channel

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = now - self.adj.channel_timeout
        for channel in list(self.active_channels.values()):
            started = channel.request_started
            if started is not None and started < cutoff and not channel.requests:
                channel.will_close = True

    def readable(self) -> bool:
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        full = len(self._map) >= self.adj.connection_limit and self._longest_waiting() is None
        if full and not self.in_connection_overflow:
            log.warning("every connection is busy at the connection limit (%d): not accepting for now",
                        self.adj.connection_limit)
        elif self.in_connection_overflow and not full:
            log.info("accepting connections again")
        self.in_connection_overflow = full
        return not full

    def handle_accept(self) -> None:
        if len(self._map) >= self.adj.connection_limit:
            victim = self._longest_waiting()
            if victim is not None:
                victim.will_close = True
        super().handle_accept()

    def _longest_waiting(self) -> _Channel | None:
        waiting = [(since, channel) for channel in self.active_channels.values()
                   if (since := channel.waiting_since()) is not None]
        return min(waiting, key=lambda pair: pair[0])[1] if waiting else None


SWITCH_INTERVAL_SECONDS = 50e-6


def build_server(app: Any, config: Config) -> _Server:
    """The waitress server for `config`, its limits set so idle or slow clients cannot starve
    real ones."""
    adj = Adjustments(
        host=config.host or "0.0.0.0",
        port=config.port,
        threads=config.threads,
        connection_limit=config.connection_limit,
        channel_timeout=config.channel_timeout,
        cleanup_interval=max(1, min(10, config.channel_timeout // 2)),
        asyncore_use_poll=True,
        max_request_header_size=65_536,
        # waitress refuses a body of max_request_body_size bytes or more; the limit itself is allowed.
        max_request_body_size=max(config.max_body_bytes, config.bulk_max_payload) + 1,
        ident="scimd",
        clear_untrusted_proxy_headers=True,
    )
    # waitress warns "Task queue depth is N" for every request that waits for a free thread:
    # one warning per request exactly when the server is busiest. Waiting for a thread is
    # ordinary backpressure, not a fault, and the access log already shows the latency.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # waitress's one I/O thread needs the GIL for every request it reads or writes, while the
    # workers hold it. CPython makes a thread that waits for the GIL wait up to the switch
    # interval (5 ms by default) before it forces a switch, and a thread that released the GIL
    # for a moment (a socket write, an SQLite step) usually takes it back before the woken one
    # runs: the I/O thread starves in 5 ms steps. Measured at 16 connections on a 2-core VM,
    # GET /Users/{id} swung between 64 and 1,200 requests/s with 5 ms and held 1,200-1,600 with
    # 50 µs (docs/benchmarks.md); POST, bound by fsync, did not move.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    if len(adj.listen) != 1:
        raise ConfigError(f"SHOWCASE_LISTEN_ADDR: {config.host!r} resolves to {len(adj.listen)} addresses; "
                          "give one address")
    return _Server(app, adj=adj)


def freeze_startup_heap() -> None:
    """Take everything built so far (modules, schemas, routes, the store) out of the cyclic
    garbage collector's full collections (gc.freeze): it lives as long as the process, so the
    collector can find nothing among it.

    Why it matters: the Looking Glass keeps each event for hundreds of requests, long enough for
    the collector to promote it to its oldest generation, and the events that die there trigger
    full collections. With capture on, one came every ~19,000 GETs and traversed the ~130,000
    start-up objects for 125-150 ms with the GIL held, stalling every request: 7-9 us per
    request on average, a third of the capture's cost (docs/benchmarks.md, "Session 6"). Frozen,
    a full collection traverses only what was built since.
    """
    gc.collect()
    gc.freeze()


def serve(app: Any, config: Config, on_reload: Any, on_stopping: Any, on_stop: Any) -> int:
    """Run until SIGTERM/SIGINT, then stop accepting, call `on_stopping` (ends Looking Glass
    streams), let in-flight requests finish and their responses go out, and call `on_stop` to
    close the database cleanly."""
    server = build_server(app, config)
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            log.info("received %s, shutting down", signal.Signals(signum).name)
            stopping.set()

    def reload(_signum: int, _frame: Any) -> None:
        try:
            on_reload()
        except ConfigError as exc:
            log.error("token reload failed, keeping the old tokens: %s", exc)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    freeze_startup_heap()
    host, port = server.effective_host, server.effective_port
    log.info("scimd listening on %s:%s with %d threads", host, port, config.threads)
    notify_systemd("READY=1")
    try:
        _run_until(server, stopping)
        notify_systemd("STOPPING=1")
        on_stopping()
        _drain(server, DRAIN_SECONDS)
    finally:
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
        wasyncore.close_all(server._map)
        on_stop()
    log.info("scimd stopped")
    return 0


DRAIN_SECONDS = 10.0
_POLL_SECONDS = 0.2


def _run_until(server: Any, stopping: threading.Event) -> None:
    """waitress's own loop, one poll at a time, so a signal can end it between polls."""
    while not stopping.is_set():
        wasyncore.loop(timeout=_POLL_SECONDS, map=server._map, use_poll=True, count=1)


def _drain(server: Any, seconds: float) -> None:
    """Refuse new connections, then keep serving until no request is in flight (or time is up)."""
    server.accepting = False
    server.del_channel()
    server.socket.close()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _busy(server):
        wasyncore.loop(timeout=_POLL_SECONDS, map=server._map, use_poll=True, count=1)


def _busy(server: Any) -> bool:
    channels = [c for c in server._map.values() if hasattr(c, "requests")]
    return server.task_dispatcher.active_count > 0 or any(
        c.requests or c.total_outbufs_len for c in channels)
