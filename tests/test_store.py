"""The SQLite store: migrations by PRAGMA user_version (from an empty file, from a version-1
database, refusing a newer one, all-or-nothing per version), uniqueness decided by a UNIQUE index,
transactions, and what a database upgraded from version 1 serves over HTTP."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from scimd import errors
from scimd import store as store_module
from scimd.schema import ENTERPRISE_URN, GROUP_TYPE, USER_TYPE, fold_case
from scimd.store import MIGRATIONS, StorageError, Store
from tests.conftest import ScimClient, assert_scim_error, make_app

LATEST = len(MIGRATIONS)
STAMP = "2024-03-01T10:00:00.000000Z"

# Version-1 rows: (id, type, name, external id, display, document); a user's name_key is its
# folded userName, a group's its folded displayName.
V1_USERS = [
    ("u-1", "Ärger@Example.com", "ext-1", "Barbara Ärger",
     {"userName": "Ärger@Example.com", "displayName": "Barbara Ärger",
      "emails": [{"value": "Work@Example.COM", "type": "work", "primary": True}, {"value": "home@example.org"}]}),
    ("u-2", "mandy", None, "mandy", {"userName": "mandy", "emails": [{"type": "work"}]}),
    ("u-3", "carol", None, "carol", {"userName": "carol"}),
]
V1_GROUPS = [("g-1", "Tour Guides", "ext-g", {"displayName": "Tour Guides", "externalId": "ext-g"})]
V1_MEMBERS = [("g-1", "u-1"), ("g-1", "u-2")]


def create_v1_database(path: Path) -> None:
    """A database as scimd's first schema left it: the v1 DDL verbatim, rows, user_version 1."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        for rid, name, external_id, display, doc in V1_USERS:
            doc = {**doc, **({"externalId": external_id} if external_id else {})}
            conn.execute("INSERT INTO resources VALUES (?, 'User', ?, ?, ?, ?, NULL, 3, ?, ?)",
                         (rid, fold_case(name), external_id, display, orjson.dumps(doc).decode(), STAMP, STAMP))
        for rid, name, external_id, doc in V1_GROUPS:
            conn.execute("INSERT INTO resources VALUES (?, 'Group', ?, ?, ?, ?, NULL, 1, ?, ?)",
                         (rid, fold_case(name), external_id, name, orjson.dumps(doc).decode(), STAMP, STAMP))
        conn.executemany("INSERT INTO members VALUES (?, ?)", V1_MEMBERS)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
    finally:
        conn.close()


def dump(path: Path, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in tables}
    finally:
        conn.close()


def pragma(path: Path, name: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


# -- migrations --------------------------------------------------------------------------------


def test_an_empty_file_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "scim.db"
    Store(path).close()
    assert pragma(path, "user_version") == LATEST
    assert {"resources", "members", "settings", "value_keys"} <= tables(path)
    assert pragma(path, "journal_mode") == "wal"


def test_reopening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "scim.db"
    store = Store(path)
    key = store.cursor_key
    store.close()
    before = dump(path, "resources", "settings", "value_keys")
    store = Store(path)
    assert store.cursor_key == key
    store.close()
    assert dump(path, "resources", "settings", "value_keys") == before
    assert pragma(path, "user_version") == LATEST


def test_version_1_database_is_upgraded_with_value_keys_backfilled_and_data_intact(tmp_path: Path) -> None:
    path = tmp_path / "scim.db"
    create_v1_database(path)
    before = dump(path, "resources", "members")
    Store(path).close()
    assert pragma(path, "user_version") == LATEST
    assert dump(path, "resources", "members") == before
    assert dump(path, "value_keys")["value_keys"] == sorted([
        ("displayName", "barbara ärger", "u-1"),
        ("emails.value", "home@example.org", "u-1"),
        ("emails.value", "work@example.com", "u-1"),
    ])


def test_an_upgraded_database_serves_its_data(tmp_path: Path) -> None:
    create_v1_database(tmp_path / "scim.db")
    app, store = make_app(tmp_path)
    try:
        client = ScimClient(app)
        barbara = client.get("/scim/v2/Users/u-1").json
        assert barbara["userName"] == "Ärger@Example.com" and barbara["externalId"] == "ext-1"
        assert barbara["meta"]["version"] == 'W/"3"' and barbara["meta"]["created"] == STAMP
        assert [g["value"] for g in barbara["groups"]] == ["g-1"]
        members = client.get("/scim/v2/Groups/g-1").json["members"]
        assert sorted((m["value"], m["display"]) for m in members) == [("u-1", "Barbara Ärger"), ("u-2", "mandy")]
        # The backfilled keys answer the indexed filter, case-insensitively.
        found = client.get('/scim/v2/Users?filter=emails.value eq "WORK@example.com"').json["Resources"]
        assert [r["id"] for r in found] == ["u-1"]
        assert_scim_error(client.post("/scim/v2/Users", json={"userName": "ärger@example.com"}), 409, "uniqueness")
        # New writes keep the keys current.
        client.put("/scim/v2/Users/u-3", json={"userName": "carol", "emails": [{"value": "Carol@Example.com"}]})
        found = client.get('/scim/v2/Users?filter=emails.value eq "carol@example.com"').json["Resources"]
        assert [r["id"] for r in found] == ["u-3"]
    finally:
        store.close()


@pytest.mark.parametrize("version", [LATEST + 1, LATEST + 40])
def test_a_newer_database_is_refused_untouched(tmp_path: Path, version: int) -> None:
    path = tmp_path / "scim.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with pytest.raises(StorageError) as raised:
        Store(path)
    message = str(raised.value)
    assert f"version {version}" in message and f"({LATEST})" in message and "newer" in message
    assert pragma(path, "user_version") == version
    assert tables(path) == {"future"}


def test_a_failing_migration_leaves_the_database_at_the_previous_version(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scim.db"
    create_v1_database(path)
    before = dump(path, "resources", "members")
    broken = (MIGRATIONS[0], ("CREATE TABLE half_done (x)", "THIS IS NOT SQL"))
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    with pytest.raises(StorageError):
        Store(path)
    assert pragma(path, "user_version") == 1
    assert "half_done" not in tables(path)
    monkeypatch.undo()
    Store(path).close()
    assert pragma(path, "user_version") == LATEST
    assert dump(path, "resources", "members") == before


def test_a_file_that_is_not_sqlite_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "scim.db"
    path.write_bytes(b"this is not a database, " * 100)
    with pytest.raises(StorageError, match="cannot open database"):
        Store(path)


# -- uniqueness and transactions ---------------------------------------------------------------


def test_the_database_itself_refuses_a_second_name_key(tmp_path: Path) -> None:
    """Uniqueness does not depend on Python checking first: a raw INSERT is refused by the index."""
    path = tmp_path / "scim.db"
    store = Store(path)
    with store.write() as tx:
        tx.insert(USER_TYPE, "u-1", {"userName": "Bjensen"}, None)
        tx.insert(GROUP_TYPE, "g-1", {"displayName": "bjensen"}, None)  # names are unique per type
    store.close()
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute("INSERT INTO resources VALUES ('u-2', 'User', 'bjensen', NULL, 'x', '{}', NULL, 1, ?, ?)",
                         (STAMP, STAMP))
    finally:
        conn.close()


@pytest.mark.parametrize(("rtype", "other", "first", "second"), [
    (USER_TYPE, {"userName": "other"}, {"userName": "BJENSEN"}, {"userName": "bjensen"}),
    (GROUP_TYPE, {"displayName": "other"}, {"displayName": "Straße"}, {"displayName": "STRASSE"}),
], ids=["user", "group-full-case-folding"])
def test_a_duplicate_insert_is_a_uniqueness_error_and_rolls_back(tmp_path: Path, rtype: Any, other: dict[str, Any],
                                                                 first: dict[str, Any], second: dict[str, Any]) -> None:
    store = Store(tmp_path / "scim.db")
    try:
        with store.write() as tx:
            tx.insert(rtype, "one", first, None)
        with pytest.raises(errors.Uniqueness), store.write() as tx:
            tx.insert(rtype, "two", other, None)
            tx.insert(rtype, "three", second, None)
        assert store.view().get(rtype, "two") is None  # the whole transaction rolled back
        assert store.view().get(rtype, "one") is not None
    finally:
        store.close()


def test_a_delete_takes_its_memberships_and_value_keys(tmp_path: Path) -> None:
    path = tmp_path / "scim.db"
    store = Store(path)
    with store.write() as tx:
        row = tx.insert(USER_TYPE, "u-1", {"userName": "a", "title": "Cook", "emails": [{"value": "a@example.com"}]}, None)
        tx.insert(GROUP_TYPE, "g-1", {"displayName": "G"}, None)
        tx.add_members("g-1", ["u-1"])
    with store.write() as tx:  # the keys a delete removes are those of the last write, not the first
        row = tx.update(USER_TYPE, row, {"userName": "a", "title": "Chef", "emails": [{"value": "b@example.com"}]}, None)
    assert {key for _, key, _ in dump(path, "value_keys")["value_keys"]} == {"chef", "b@example.com"}
    with store.write() as tx:
        tx.delete(USER_TYPE, row)
    store.close()
    assert dump(path, "members", "value_keys") == {"members": [], "value_keys": []}


def test_value_keys_have_no_foreign_key_nor_index_by_resource(tmp_path: Path) -> None:
    """Migration 5: a key costs one B-tree insert, not two plus a look-up of its resource."""
    path = tmp_path / "scim.db"
    create_v1_database(path)
    Store(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA foreign_key_list(value_keys)").fetchall() == []
        assert [row[1] for row in conn.execute("PRAGMA index_list(value_keys)")] == ["sqlite_autoindex_value_keys_1"]
        assert [len(conn.execute("PRAGMA foreign_key_list(members)").fetchall())] == [2]  # members keep theirs
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_the_foreign_key_migration_refuses_a_table_it_does_not_recognise(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "scim.db", isolation_level=None)
    conn.execute("CREATE TABLE value_keys (attr TEXT, key TEXT, resource_id TEXT)")
    with pytest.raises(StorageError, match="foreign key is not where"):
        store_module._drop_value_keys_foreign_key(conn)
    assert conn.execute("PRAGMA writable_schema").fetchone() == (0,)
    conn.close()


def test_a_closed_store_fails_its_health_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "scim.db")
    store.ping()
    store.close()
    with pytest.raises(StorageError):
        store.ping()
    with pytest.raises(StorageError), store.write():
        pass


# -- derived columns -----------------------------------------------------------------------------

# (method, body) applied in turn to one user; after each, the derived columns must be those of the
# stored document, whether the write changed them (rename, externalId) or not (title).
DERIVED_WRITES = [
    ("PATCH", {"op": "replace", "path": "title", "value": "Boss"}),
    ("PATCH", {"op": "replace", "path": "userName", "value": "Renamed@Example.com"}),
    ("PATCH", {"op": "replace", "path": "externalId", "value": "ext-2"}),
    ("PATCH", {"op": "remove", "path": "externalId"}),
    ("PATCH", {"op": "replace", "path": "displayName", "value": "Barbara J."}),
    ("PUT", {"userName": "put-name", "externalId": "ext-3"}),
    ("PATCH", {"op": "replace", "path": "title", "value": "Chief"}),
]


def test_every_update_keeps_the_derived_columns_exact(tmp_path: Path) -> None:
    app, store = make_app(tmp_path)
    client = ScimClient(app)
    try:
        rid = client.post("/scim/v2/Users", json={"userName": "bjensen", "externalId": "ext-1"}).json["id"]
        for method, body in DERIVED_WRITES:
            url = f"/scim/v2/Users/{rid}"
            if method == "PATCH":
                response = client.patch(url, json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                                   "Operations": [body]})
            else:
                response = client.put(url, json=body)
            assert response.status_code == 200, response.get_data(as_text=True)
            row = store.view().get(USER_TYPE, rid)
            assert row is not None
            stored = store.reader().execute("SELECT name_key, external_id, display FROM resources WHERE id = ?",
                                            (rid,)).fetchone()
            assert stored == store_module._columns(USER_TYPE, row.doc), (method, body)
            found = client.get("/scim/v2/Users", query_string={"filter": f'userName eq "{row.doc["userName"]}"'})
            assert [r["id"] for r in found.json["Resources"]] == [rid]
    finally:
        store.close()


def test_a_row_is_fetched_as_three_columns_with_its_sort_keys(tmp_path: Path) -> None:
    """CPython's sqlite3 releases the GIL once per column of each row fetched: a row's small
    fields, its manager's name and its sort keys travel as one JSON array, beside its document
    and its edges (docs/benchmarks.md, "Session 8"); the keys come back as SQLite gave them."""
    store = Store(tmp_path / "scim.db")
    try:
        with store.write() as tx:
            tx.insert(USER_TYPE, "boss", {"userName": "boss", "displayName": "The Boss"}, None)
            tx.insert(USER_TYPE, "u-1", {"userName": "one", "title": "Ch\u00e9f \"1\"",
                                         ENTERPRISE_URN: {"manager": {"value": "boss"}}}, "hash")
            tx.insert(GROUP_TYPE, "g-1", {"displayName": "Staff"}, None)
            tx.add_members("g-1", ["u-1"])
        related = store_module.Related(edges=frozenset({"User"}), manager=True)
        cursor = store.reader().execute(
            f"SELECT {store_module.row_columns(related, ['r.id', 'r.version', 'NULL'])} FROM resources AS r "
            "WHERE r.id = 'u-1'")
        assert len(cursor.description) == 3
        (row,), keys = store_module.rows_and_keys(cursor)
        assert keys == [("u-1", 2, None)]  # the version moved with the membership
        assert (row.id, row.type, row.version, row.secret, row.manager_display) == ("u-1", "User", 2, "hash", "The Boss")
        assert row.doc["title"] == 'Ch\u00e9f "1"' and row.created <= row.last_modified
        assert [(edge.id, edge.display) for edge in row.edges or []] == [("g-1", "Staff")]
    finally:
        store.close()


# -- background checkpoints ----------------------------------------------------------------------


def _record_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """(thread name, result) of every background checkpoint from now on."""
    calls: list[tuple[str, Any]] = []
    original = store_module._Checkpointer._checkpoint

    def recording(conn: sqlite3.Connection) -> Any:
        result = original(conn)
        calls.append((threading.current_thread().name, result))
        return result

    monkeypatch.setattr(store_module._Checkpointer, "_checkpoint", staticmethod(recording))
    return calls


def _wait_for(condition: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_commits_are_checkpointed_on_a_thread_of_their_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record_checkpoints(monkeypatch)
    store = Store(tmp_path / "scim.db")
    try:
        # The writer's own automatic checkpoint is only the safety net.
        assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == store_module.INLINE_CHECKPOINT_PAGES
        assert store._writer.execute("PRAGMA journal_size_limit").fetchone()[0] == store_module.WAL_SIZE_LIMIT_BYTES
        for n in range(20):
            with store.write() as tx:
                tx.insert(USER_TYPE, f"u-{n}", {"userName": f"user{n}"}, None)
        assert _wait_for(lambda: calls and calls[-1][1][1] > 0)
        name, (busy, frames, copied) = calls[-1]
        assert name == "scimd-checkpoint"
        assert (busy, copied) == (0, frames)  # every committed frame is back in the database file
        assert store.view().get(USER_TYPE, "u-19") is not None
    finally:
        store.close()
    assert not any(t.name == "scimd-checkpoint" for t in threading.enumerate())  # close() ended it


def test_a_store_that_only_reads_starts_no_checkpoint_thread(tmp_path: Path) -> None:
    Store(tmp_path / "scim.db").close()
    store = Store(tmp_path / "scim.db")
    try:
        store.ping()
        assert store.view().get(USER_TYPE, "nobody") is None
        assert not any(t.name == "scimd-checkpoint" for t in threading.enumerate())
    finally:
        store.close()


def test_a_failed_background_checkpoint_is_logged_and_writes_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def execute(self, sql: str) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

    assert store_module._Checkpointer._checkpoint(Refusing()) is None  # type: ignore[arg-type]
    assert "background WAL checkpoint failed: disk I/O error" in caplog.text


def test_a_checkpointer_that_cannot_connect_is_logged_and_writes_go_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(tmp_path / "scim.db").close()  # reopened, it writes nothing: no checkpointer started yet
    store = Store(tmp_path / "scim.db")
    store.ping()  # this thread's reader is open before connecting fails

    def refuse(path: Path) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(store_module, "_connect", refuse)  # only the checkpointer connects from now on
    try:
        for n in range(3):
            with store.write() as tx:
                tx.insert(USER_TYPE, f"u-{n}", {"userName": f"user{n}"}, None)
        assert _wait_for(lambda: "cannot open a connection for background WAL checkpoints" in caplog.text)
        assert store.view().get(USER_TYPE, "u-2") is not None
    finally:
        store.close()
