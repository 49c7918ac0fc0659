"""Protocol decisions of the current request, for the Looking Glass.

The core (filter compiler, PATCH engine, validation leniencies, Bulk) calls `note()`; nothing
is recorded unless the capture layer set `recorder.decisions` (or opened `recording()`) around
the request, so the cost with capture off is one attribute lookup.

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


class _Recorder(threading.local):
    decisions: Decisions | None = None  # what a thread sees until it records


# The capture layer sets recorder.decisions itself, saving what was there and putting it back
# after the request (recordings nest): it does so on every request, where two calls to functions
# wrapping the two assignments would cost more than the assignments.
recorder = _Recorder()


def note(kind: str, **detail: Any) -> None:
    """Record one decision, e.g. note("leniency", text='coerced "False" to false')."""
    decisions = recorder.decisions
    if decisions is not None:
        decisions.append({"kind": kind, **detail})


def active() -> bool:
    """True while a request is being recorded: lets callers skip building costly detail."""
    return recorder.decisions is not None


@contextmanager
def recording() -> Iterator[Decisions]:
    decisions: Decisions = []
    previous = recorder.decisions
    recorder.decisions = decisions
    try:
        yield decisions
    finally:
        recorder.decisions = previous
