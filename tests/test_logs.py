"""The batching log handler: access lines leave in batches, warnings at once and in order,
nothing is lost at close."""

from __future__ import annotations

import io
import logging
import sys
import time

import pytest

from scimd.logs import BatchingHandler


def make_logger(stream: io.StringIO, interval: float = 60.0, limit: int = 100) -> tuple[logging.Logger, BatchingHandler]:
    handler = BatchingHandler(stream, interval=interval, limit=limit)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.Logger(f"test-{id(stream)}", logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def test_info_lines_wait_and_a_warning_writes_them_first_in_order() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream)
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""
    logger.warning("three")
    assert stream.getvalue() == "INFO one\nINFO two\nWARNING three\n"
    handler.close()


def test_a_full_batch_is_written_without_waiting() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream, limit=3)
    for n in range(3):
        logger.info("line %d", n)
    assert stream.getvalue().splitlines() == ["INFO line 0", "INFO line 1", "INFO line 2"]
    handler.close()


def test_pending_lines_are_written_within_the_interval() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream, interval=0.05)
    logger.info("late")
    deadline = time.monotonic() + 5
    while stream.getvalue() == "" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stream.getvalue() == "INFO late\n"
    handler.close()


def test_close_writes_everything_pending() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream)
    logger.info("last words")
    handler.close()
    assert stream.getvalue() == "INFO last words\n"
    handler.close()  # again, as logging.shutdown() does at exit: must not raise


def test_a_closed_stream_does_not_break_logging() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream)
    stream.close()
    logger.warning("nowhere to go")  # must not raise
    handler.close()


def test_serving_sets_up_waitress_for_load() -> None:
    """No warning per queued request; a GIL switch interval short enough for waitress's I/O thread."""
    from scimd.config import Config
    from scimd.server import SWITCH_INTERVAL_SECONDS, build_server

    default = sys.getswitchinterval()
    server = build_server(lambda environ, start_response: [], Config(host="127.0.0.1", port=0, threads=1))
    try:
        assert not logging.getLogger("waitress.queue").isEnabledFor(logging.WARNING)
        assert logging.getLogger("waitress.queue").isEnabledFor(logging.ERROR)
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
    finally:
        server.task_dispatcher.shutdown()
        server.close()
        sys.setswitchinterval(default)


def test_lines_logged_from_many_threads_at_once_are_all_written_each_thread_in_order() -> None:
    import threading

    stream = io.StringIO()
    logger, handler = make_logger(stream, interval=0.001, limit=7)
    start = threading.Barrier(8)

    def log_lines(thread: int) -> None:
        start.wait()
        for n in range(2000):
            logger.info("%d %d", thread, n)

    threads = [threading.Thread(target=log_lines, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()
    seen: dict[str, list[int]] = {}
    for line in stream.getvalue().splitlines():
        _, thread, n = line.split()
        seen.setdefault(thread, []).append(int(n))
    assert seen == {str(t): list(range(2000)) for t in range(8)}


def test_a_record_the_handler_filters_out_is_not_written() -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream)
    handler.addFilter(lambda record: "secret" not in record.getMessage())
    logger.warning("a secret")
    logger.warning("public")
    handler.close()
    assert stream.getvalue() == "WARNING public\n"


def test_a_record_that_cannot_be_formatted_is_reported_and_logging_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    logger, handler = make_logger(stream)
    logger.warning("%d items", "not a number")
    logger.warning("next")
    handler.close()
    assert stream.getvalue() == "WARNING next\n"
    assert "not a number" in capsys.readouterr().err  # logging's handleError report
