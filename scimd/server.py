"""Serving: waitress with a bounded thread pool and connection limits, graceful shutdown on
SIGTERM/SIGINT, token reload on SIGHUP, and systemd readiness notification."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

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


def build_server(app: Any, config: Config) -> Any:
    """A waitress server whose limits keep idle or slow clients from starving real ones
    (pitfalls: waitress connection_limit, channel_timeout)."""
    return create_server(
        app,
        host=config.host or "0.0.0.0",
        port=config.port,
        threads=config.threads,
        connection_limit=config.connection_limit,
        channel_timeout=config.channel_timeout,
        cleanup_interval=max(1, min(10, config.channel_timeout // 2)),
        asyncore_use_poll=True,
        max_request_header_size=65_536,
        max_request_body_size=max(config.max_body_bytes, config.bulk_max_payload),
        ident="scimd",
        clear_untrusted_proxy_headers=True,
    )


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
