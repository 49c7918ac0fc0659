"""Group commit (scimd/store.py Store.write): writes queued behind a running write share its
transaction and its one COMMIT, each in its own savepoint; none returns before that COMMIT; one
that fails is undone alone; a COMMIT that fails fails every write of the group."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from scimd.schema import USER_TYPE
from scimd.store import StorageError, Store
from tests.conftest import ScimClient, make_app


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "scim.db")
    yield store
    store.close()


def stored_names(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(name for (name,) in conn.execute("SELECT name_key FROM resources"))
    finally:
        conn.close()


class Writer(threading.Thread):
    """A thread doing one store.write() that inserts a user, optionally waiting or failing inside."""

    def __init__(self, store: Store, name: str, events: list[str], inside: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.store, self.user, self.events, self.inside = store, name, events, inside
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.store.write() as tx:
                tx.insert(USER_TYPE, self.user, {"userName": self.user}, None)
                self.inside()
            self.events.append(f"{self.user} returned")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            self.error = exc


def start_first_writer(store: Store, events: list[str],
                       after: Callable[[], None] = lambda: None) -> tuple[Writer, threading.Event]:
    """`first`, started and holding the writer lock inside its write until the event is set."""
    release = threading.Event()

    def hold_then_go_on() -> None:
        release.wait(10)
        after()

    first = Writer(store, "first", events, inside=hold_then_go_on)
    first.start()
    wait_for(lambda: store._group is not None)
    return first, release


def run_group(store: Store, events: list[str], inside_second: Callable[[], None] = lambda: None,
              after_first: Callable[[], None] = lambda: None) -> list[Writer]:
    """`first` holds the writer lock until `second` and `third` are queued behind it, then all run."""
    first, release = start_first_writer(store, events, after_first)
    others = [Writer(store, "second", events, inside_second), Writer(store, "third", events)]
    for writer in others:
        writer.start()
    wait_for(lambda: store._queued == 2)
    release.set()
    for writer in (first, *others):
        writer.join(10)
    return [first, *others]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def trace_statements(store: Store, events: list[str]) -> None:
    store._writer.set_trace_callback(lambda sql: events.append(sql) if sql in ("COMMIT", "BEGIN IMMEDIATE") else None)


def test_writes_queued_behind_a_write_share_its_one_commit_and_none_returns_before_it(store: Store,
                                                                                       tmp_path: Path) -> None:
    events: list[str] = []
    trace_statements(store, events)
    writers = run_group(store, events)
    assert [w.error for w in writers] == [None, None, None]
    assert events[:2] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert sorted(events[2:]) == ["first returned", "second returned", "third returned"]
    assert stored_names(tmp_path / "scim.db") == ["first", "second", "third"]


def fail() -> None:
    raise ValueError("invalid")


def test_a_failing_write_is_undone_alone(store: Store, tmp_path: Path) -> None:
    writers = run_group(store, [], inside_second=fail)
    assert isinstance(writers[1].error, ValueError)
    assert writers[0].error is None and writers[2].error is None
    assert stored_names(tmp_path / "scim.db") == ["first", "third"]


def test_a_failing_first_write_is_undone_and_the_writes_queued_behind_it_commit(store: Store, tmp_path: Path) -> None:
    writers = run_group(store, [], after_first=fail)
    assert isinstance(writers[0].error, ValueError)
    assert writers[1].error is None and writers[2].error is None
    assert stored_names(tmp_path / "scim.db") == ["second", "third"]


def test_a_write_alone_runs_without_a_savepoint(store: Store) -> None:
    """A savepoint makes SQLite copy every page a statement changes to a sub-journal: only a write
    that joins others needs one."""
    statements: list[str] = []
    store._writer.set_trace_callback(statements.append)
    with store.write() as tx:
        tx.insert(USER_TYPE, "alone", {"userName": "alone"}, None)
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
    assert not any(sql.startswith(("SAVEPOINT", "RELEASE")) for sql in statements)


class FailingStatement:
    """The writer connection, except that one statement fails as SQLite fails it on a full disk
    or an I/O error."""

    def __init__(self, conn: sqlite3.Connection, failing: str, message: str) -> None:
        self._conn, self._failing, self._message = conn, failing, message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == self._failing:
            raise sqlite3.OperationalError(self._message)
        return self._conn.execute(sql, *args)


def test_a_failed_commit_fails_every_write_of_the_group_and_keeps_nothing(store: Store, tmp_path: Path) -> None:
    store._writer = FailingStatement(store._writer, "COMMIT", "database or disk is full")  # type: ignore[assignment]
    events: list[str] = []
    writers = run_group(store, events)
    assert [type(w.error) for w in writers] == [StorageError] * 3
    assert events == []
    assert stored_names(tmp_path / "scim.db") == []
    store._writer = store._writer._conn  # type: ignore[attr-defined]
    with store.write() as tx:  # the store goes on working
        tx.insert(USER_TYPE, "later", {"userName": "later"}, None)
    assert stored_names(tmp_path / "scim.db") == ["later"]


def test_closing_the_store_fails_the_writes_waiting_for_their_commit(store: Store, tmp_path: Path) -> None:
    events: list[str] = []
    first, release = start_first_writer(store, events)
    second = Writer(store, "second", events)
    second.start()
    wait_for(lambda: store._queued == 1)
    closer = threading.Thread(target=store.close)
    release.set()
    closer.start()
    for thread in (first, second, closer):
        thread.join(10)
    # Whichever came first, the closer or the queued writer, no write claims success unless committed.
    assert not any(thread.is_alive() for thread in (first, second, closer))
    for writer in (first, second):
        assert writer.error is None or isinstance(writer.error, StorageError)
    succeeded = sorted(writer.user for writer in (first, second) if writer.error is None)
    assert stored_names(tmp_path / "scim.db") == succeeded


def test_concurrent_posts_are_all_created_once(tmp_path: Path) -> None:
    app, store = make_app(tmp_path)
    client = ScimClient(app)
    statuses: list[int] = []

    def post_many(thread: int) -> None:
        for n in range(25):
            statuses.append(client.post("/scim/v2/Users", json={"userName": f"user-{thread}-{n}"}).status_code)

    threads = [threading.Thread(target=post_many, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    store.close()
    assert statuses == [201] * 200
    assert stored_names(tmp_path / "scim.db") == sorted(f"user-{t}-{n}" for t in range(8) for n in range(25))


def test_a_write_that_cannot_be_undone_alone_fails_its_whole_group(store: Store, tmp_path: Path) -> None:
    # Undoing the savepoint fails, as after an I/O error that made SQLite roll the whole
    # transaction back itself.
    store._writer = FailingStatement(store._writer, "ROLLBACK TO write", "disk I/O error")  # type: ignore[assignment]
    writers = run_group(store, [], inside_second=fail)
    assert isinstance(writers[1].error, ValueError)  # its own error, as raised in its body
    assert isinstance(writers[0].error, StorageError)  # shared the transaction that was lost
    # `third` either joined the lost group before `second` (and fails with it) or came after
    # and started a group of its own: whichever, it is stored exactly when it succeeded.
    assert writers[2].error is None or isinstance(writers[2].error, StorageError)
    assert stored_names(tmp_path / "scim.db") == ([] if writers[2].error else ["third"])


def test_closing_the_store_fails_a_write_waiting_for_its_group_to_commit(store: Store, tmp_path: Path) -> None:
    events: list[str] = []
    first, release = start_first_writer(store, events)
    with store._queue_lock:
        store._queued += 1  # a writer about to queue: the first hands its transaction over and waits
    release.set()
    wait_for(lambda: not store._write_lock.locked())
    store.close()
    first.join(10)
    assert isinstance(first.error, StorageError) and events == []
    assert stored_names(tmp_path / "scim.db") == []


def test_a_write_that_cannot_join_fails_the_group_waiting_on_it_instead_of_leaving_it_waiting(
        store: Store, tmp_path: Path) -> None:
    store._writer = FailingStatement(store._writer, "SAVEPOINT write", "disk I/O error")  # type: ignore[assignment]
    writers = run_group(store, [])
    assert not any(writer.is_alive() for writer in writers)
    assert isinstance(writers[0].error, StorageError)  # its group could not go on
    later = writers[1:]
    assert sorted(type(writer.error).__name__ for writer in later) == ["NoneType", "OperationalError"]
    # The one that came after the failed group started its own, alone, without a savepoint.
    assert stored_names(tmp_path / "scim.db") == [writer.user for writer in later if writer.error is None]
