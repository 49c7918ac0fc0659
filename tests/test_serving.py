"""How `scimd serve` prepares the process before it accepts a connection."""

from __future__ import annotations

import gc
import signal
from typing import Any

import pytest

from scimd import server
from scimd.config import Config


class _Tracked:
    """An object the garbage collector tracks, as everything the app builds at start-up is."""


def _young(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())  # the frozen generation is not listed


def test_freezing_takes_what_exists_out_of_full_collections() -> None:
    built_at_startup = _Tracked()
    assert _young(built_at_startup)
    frozen_before = gc.get_freeze_count()
    try:
        server.freeze_startup_heap()
        assert gc.get_freeze_count() > frozen_before
        assert not _young(built_at_startup)
        built_later = _Tracked()
        assert _young(built_later)  # what a request builds is still collected as usual
    finally:
        gc.unfreeze()


def test_serve_freezes_the_heap_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    monkeypatch.setattr(server, "freeze_startup_heap", lambda: steps.append("freeze"))
    monkeypatch.setattr(server, "_run_until", lambda _server, _stopping: steps.append("serve"))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    noop: Any = lambda: None  # noqa: E731
    try:
        status = server.serve(lambda environ, start_response: [], Config(host="127.0.0.1", port=0, threads=1),
                              on_reload=noop, on_stopping=noop, on_stop=lambda: steps.append("stop"))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert status == 0
    assert steps == ["freeze", "serve", "stop"]
