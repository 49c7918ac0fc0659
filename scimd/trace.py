"""Protocol decisions of the current request, for the Looking Glass.

The core (filter compiler, PATCH engine, validation leniencies, Bulk) calls `note()`; nothing
is recorded unless the capture layer opened `recording()` (or `start()`) around the request, so
the cost with capture off is one ContextVar lookup.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Callable, Iterator

Decisions = list[dict[str, Any]]

_decisions: ContextVar[Decisions | None] = ContextVar("scimd_decisions", default=None)


def note(kind: str, **detail: Any) -> None:
    """Record one decision, e.g. note("leniency", text='coerced "False" to false')."""
    decisions = _decisions.get()
    if decisions is not None:
        decisions.append({"kind": kind, **detail})


def active() -> bool:
    """True while a request is being recorded: lets callers skip building costly detail."""
    return _decisions.get() is not None


# start(decisions) records this context's decisions into `decisions` until stop() is given
# what start returned. They are the ContextVar's own methods rather than functions around them,
# because the capture layer calls them on every request, where a Python frame (let alone the
# generator of recording()) costs more than the ContextVar itself.
start: Callable[[Decisions], Token[Decisions | None]] = _decisions.set
stop: Callable[[Token[Decisions | None]], None] = _decisions.reset


@contextmanager
def recording() -> Iterator[Decisions]:
    decisions: Decisions = []
    token = start(decisions)
    try:
        yield decisions
    finally:
        stop(token)
