"""Log output: one line per record on stderr, written in batches.

The access log is one line per request. A write system call per line is a GIL hand-off per
request on the request thread, and under load every hand-off costs throughput; a list append
does not. Lines wait at most FLUSH_SECONDS; a warning or worse goes out at once (with the lines
queued before it, in order), and everything is written at exit (logging.shutdown flushes).
"""

from __future__ import annotations

import logging
import threading
from typing import TextIO

FLUSH_SECONDS = 0.5
MAX_PENDING = 256  # lines; a burst is written as soon as this many wait


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: TextIO, interval: float = FLUSH_SECONDS, limit: int = MAX_PENDING) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._limit = limit
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every, args=(interval,), name="scimd-log-flush",
                                         daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called by Handler.handle() with self.lock held.
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or len(self._pending) >= self._limit:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        self._closed.set()
        self.flush()
        super().close()

    def _write(self) -> None:
        if not self._pending:
            return
        lines, self._pending = "".join(self._pending), []
        try:
            self.stream.write(lines)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or full: nothing sensible to do with a log line
            pass

    def _flush_every(self, interval: float) -> None:
        while not self._closed.wait(interval):
            self.flush()


def setup_logging(level: str, stream: TextIO) -> None:
    handler = BatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
