"""Protocol decisions of the current request, for the Looking Glass.

The core (filter compiler, PATCH engine, validation leniencies, Bulk) calls `note()`; nothing
is recorded unless the capture layer opened `recording()` (or `start()`) around the request, so
the cost with capture off is one attribute lookup.

The list being recorded into is per thread: a WSGI request runs on one thread from its start to
its end. A thread-local attribute rather than a ContextVar because the capture layer switches it
twice on every request, and setting a ContextVar builds a new context mapping and a Token each
time, which cost a GET about a microsecond.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

Decisions = list[dict[str, Any]]


class _Current(threading.local):
    decisions: Decisions | None = None  # what a thread sees until it records


_current = _Current()


def note(kind: str, **detail: Any) -> None:
    """Record one decision, e.g. note("leniency", text='coerced "False" to false')."""
    decisions = _current.decisions
    if decisions is not None:
        decisions.append({"kind": kind, **detail})


def active() -> bool:
    """True while a request is being recorded: lets callers skip building costly detail."""
    return _current.decisions is not None


def start(decisions: Decisions) -> Decisions | None:
    """Record this thread's decisions into `decisions` until stop() is given what this returns
    (what was being recorded before: recordings nest)."""
    previous = _current.decisions
    _current.decisions = decisions
    return previous


def stop(previous: Decisions | None) -> None:
    _current.decisions = previous


@contextmanager
def recording() -> Iterator[Decisions]:
    decisions: Decisions = []
    previous = start(decisions)
    try:
        yield decisions
    finally:
        stop(previous)
