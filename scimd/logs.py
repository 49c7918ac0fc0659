"""Log output: one line per record on stderr, written in batches.

The access log is one line per request. A write system call per line is a GIL hand-off per
request on the request thread, and under load every hand-off costs throughput; a queue append
does not. Lines wait at most FLUSH_SECONDS; a warning or worse goes out at once (with the lines
queued before it, in order), and everything is written at exit (logging.shutdown flushes).

Records are queued without logging's per-handler lock: with eight request threads, a thread
that holds that lock when its GIL time slice ends makes every other thread that logs block on it
(a futex wait and a context switch each). Only writing takes the lock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TextIO

FLUSH_SECONDS = 0.5
MAX_PENDING = 256  # lines; a burst is written as soon as this many wait


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, stream: TextIO, interval: float = FLUSH_SECONDS, limit: int = MAX_PENDING) -> None:
        super().__init__(stream)
        self._pending: deque[str] = deque()  # append and popleft are atomic: no lock to queue a line
        self._limit = limit
        self._stopping = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every, args=(interval,), name="scimd-log-flush",
                                         daemon=True)
        self._flusher.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """Handler.handle() without the lock around emit()."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or len(self._pending) >= self._limit:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()

    def _write(self) -> None:
        lines = []
        while self._pending:
            lines.append(self._pending.popleft())
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or full: nothing sensible to do with a log line
            pass

    def _flush_every(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            self.flush()


def setup_logging(level: str, stream: TextIO) -> None:
    # Records carry no thread, process or source-line details: the format does not show them, and
    # finding the caller walks the stack for every access line (logging HOWTO, "Optimization").
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]
    handler = BatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
