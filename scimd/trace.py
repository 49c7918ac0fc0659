"""Protocol decisions of the current request, for the Looking Glass.

The core (filter compiler, PATCH engine, validation leniencies, Bulk) calls `note()`; nothing
is recorded unless the capture layer opened `recording()` around the request, so the cost
with capture off is one ContextVar lookup.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

_decisions: ContextVar[list[dict[str, Any]] | None] = ContextVar("scimd_decisions", default=None)


def note(kind: str, **detail: Any) -> None:
    """Record one decision, e.g. note("leniency", text='coerced "False" to false')."""
    decisions = _decisions.get()
    if decisions is not None:
        decisions.append({"kind": kind, **detail})


def active() -> bool:
    """True while a request is being recorded: lets callers skip building costly detail."""
    return _decisions.get() is not None


@contextmanager
def recording() -> Iterator[list[dict[str, Any]]]:
    decisions: list[dict[str, Any]] = []
    token = _decisions.set(decisions)
    try:
        yield decisions
    finally:
        _decisions.reset(token)
