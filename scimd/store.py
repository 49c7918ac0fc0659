"""SQLite storage: connections, PRAGMAs, migrations, transactions and every SQL statement
except those the filter compiler (scimd/sql.py) builds.

One writer at a time (a lock around `BEGIN IMMEDIATE`, pitfalls: SQLite), readers on
per-thread connections, WAL with synchronous=FULL so a commit acknowledged with 2xx survives
`kill -9` and power loss. A UNIQUE index decides uniqueness races, never SELECT-then-INSERT.
"""

from __future__ import annotations

import functools
import logging
import secrets
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from scimd import errors
from scimd.schema import (
    BINARY, COMPLEX, ENTERPRISE_URN, GROUP_TYPE, REFERENCE, RESOURCE_TYPES, STRING, USER_TYPE, Attribute, ResourceType,
    Schema, fold_case, now,
)

SCHEMA_VERSION_KEY = "user_version"
BUSY_TIMEOUT_MS = 10_000
CHECKPOINT_INTERVAL_SECONDS = 0.1  # at most this often; only after commits
# The writer's own automatic checkpoint, left as a safety net in case the checkpointer thread
# fails: 100,000 pages (~400 MiB of WAL), so that a large Bulk (1,000 creates dirty ~15,000
# pages) does not pay for a checkpoint inside its COMMIT (measured: 150 ms of 860).
INLINE_CHECKPOINT_PAGES = 100_000
# A WAL that a large transaction grew is cut back to this when it restarts, instead of keeping
# its largest size on disk for good.
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

log = logging.getLogger("scimd.store")

# The attribute each type keeps case-folded in its own unique column, name_key.
NAME_KEY_ATTRIBUTES = {"User": "userName", "Group": "displayName"}
# Multi-valued sub-attributes kept in value_keys, per resource type (Entra matches users by email).
INDEXED_VALUES: dict[str, tuple[tuple[str, str], ...]] = {"User": (("emails", "value"),), "Group": ()}
_TEXT_TYPES = (STRING, REFERENCE, BINARY)


@dataclass(frozen=True, slots=True)
class IndexedAttribute:
    """A string attribute whose values value_keys holds, folded with `fold_case` unless caseExact,
    so that every comparison on it reads that index instead of parsing each JSON document."""

    schema: Schema
    extension: bool  # the values sit under the schema URN in the document (RFC 7643 §3.3)
    attr: Attribute
    sub: Attribute | None

    @property
    def leaf(self) -> Attribute:
        return self.sub or self.attr

    @property
    def key(self) -> str:
        """value_keys.attr: `name.familyName`; an extension's qualified by its schema name,
        `EnterpriseUser:department`, which no core attribute name can be (RFC 7643 §2.1 ATTRNAME
        has no colon). The URN would add 45 bytes to each row, twice with value_keys_by_resource
        (measured: 462 MB instead of 522 MB for 166,000 users)."""
        path = ".".join(part.name for part in (self.attr, self.sub) if part)
        return f"{self.schema.name}:{path}" if self.extension else path

    def json_path(self) -> str:
        """`$.name.familyName`, `$."urn:...:User".manager.value`: names from the schema only."""
        names = [self.schema.id] * self.extension + [part.name for part in (self.attr, self.sub) if part]
        return "$." + ".".join(name if name.isalnum() else f'"{name}"' for name in names)

    @property
    def holder_id(self) -> str | None:
        """The key of the object that holds the attribute in a document: its extension's URN, or
        None for the document itself."""
        return self.schema.id if self.extension else None


def _stored_strings(rtype: ResourceType, schema: Schema) -> Iterator[tuple[Attribute, Attribute | None]]:
    """The singular string attributes of `schema` a document stores, as (attribute, sub-attribute):
    not readOnly ones (never stored: resource.py drops them, e.g. manager.displayName), not
    `returned: never` (password: a filter on it would be an oracle), not `$ref` (directory.py
    renders it from the value), not the attribute kept in the name_key column."""
    def stored(attr: Attribute) -> bool:
        return (attr.type in _TEXT_TYPES and not attr.multi_valued and not attr.read_only
                and attr.returned != "never" and attr.name != "$ref")

    for attr in schema.attributes:
        if schema is rtype.core and attr.name == NAME_KEY_ATTRIBUTES[rtype.name]:
            continue
        if attr.type == COMPLEX and not attr.multi_valued and not attr.read_only:
            yield from ((attr, sub) for sub in attr.sub_attributes if stored(sub))
        elif stored(attr):
            yield attr, None


def _indexed_attributes(rtype: ResourceType) -> tuple[IndexedAttribute, ...]:
    """What value_keys holds for a type: INDEXED_VALUES, then every singular string attribute the
    document stores, as scimd/schema.py defines them."""
    core = rtype.core
    indexed = (
        *(IndexedAttribute(core, False, attr, attr.sub(sub)) for name, sub in INDEXED_VALUES[rtype.name]
          if (attr := core.attribute(name))),
        *(IndexedAttribute(schema, schema is not core, attr, sub)
          for schema in rtype.schemas for attr, sub in _stored_strings(rtype, schema)),
    )
    assert len({a.key for a in indexed}) == len(indexed), f"two extensions of {rtype.name} share a schema name"
    return indexed


# value_keys' attributes per resource type name. Changing this set (a new schema attribute) needs
# a new migration that backfills the new attributes: old databases have no keys for them, and a
# filter on an indexed attribute reads value_keys only.
INDEXED_ATTRIBUTES: dict[str, tuple[IndexedAttribute, ...]] = {
    rtype.name: _indexed_attributes(rtype) for rtype in RESOURCE_TYPES.values()}


@dataclass(frozen=True, slots=True)
class _KeyedAttribute:
    """How to read one attribute's keys from its value in a document: its own (`direct`, a
    singular string) or its elements' sub-attributes (`subs`: value_keys.attr, sub-attribute
    name, caseExact)."""

    direct: tuple[str, bool] | None  # (value_keys.attr, caseExact)
    multi_valued: bool
    subs: tuple[tuple[str, str, bool], ...]


def _key_plan(attributes: tuple[IndexedAttribute, ...]) -> tuple[tuple[str | None, dict[str, _KeyedAttribute]], ...]:
    """Per holder (None: the document; else an extension's URN), attribute name -> how to read its
    keys. value_keys walks a document's own keys through it: a User has ~25 indexed attributes,
    a document holds a handful of them."""
    holders: dict[str | None, dict[str, _KeyedAttribute]] = {}
    for indexed in attributes:
        plans = holders.setdefault(indexed.holder_id, {})
        plan = plans.get(indexed.attr.name, _KeyedAttribute(None, indexed.attr.multi_valued, ()))
        if indexed.sub is None:
            plan = _KeyedAttribute((indexed.key, indexed.attr.case_exact), plan.multi_valued, plan.subs)
        else:
            sub = (indexed.key, indexed.sub.name, indexed.sub.case_exact)
            plan = _KeyedAttribute(plan.direct, plan.multi_valued, (*plan.subs, sub))
        plans[indexed.attr.name] = plan
    return tuple(holders.items())


_KEY_PLANS = {name: _key_plan(attributes) for name, attributes in INDEXED_ATTRIBUTES.items()}


def _backfill_singular_values(rtype: ResourceType) -> str:
    """One INSERT of the keys of every singular indexed attribute of a type, in one sequential pass
    over the table (NOT INDEXED: the type index would read it in random order). json_extract with
    two or more paths parses each document once and returns a JSON array of the values; json_each
    reads it back, position -> attribute. Rows are inserted in primary-key order and the migration
    rebuilds value_keys_by_resource afterwards: sequential B-tree writes, not random ones.
    Measured: 8.7 s for 166,000 users, 62 s for 1,000,000 (of which scim_fold, the Python
    `fold_case`, 5.7 s; an ASCII shortcut through SQLite's lower() saved only 1 s of that)."""
    singular = [a for a in INDEXED_ATTRIBUTES[rtype.name] if not a.attr.multi_valued]
    names = " ".join(f"WHEN {position} THEN '{a.key}'" for position, a in enumerate(singular))
    exact = ", ".join(str(position) for position, a in enumerate(singular) if a.leaf.case_exact)
    paths = ", ".join(f"'{a.json_path()}'" for a in singular)
    return f"""INSERT INTO value_keys (attr, key, resource_id)
        SELECT CASE v.key {names} END, CASE WHEN v.key IN ({exact}) THEN v.value ELSE scim_fold(v.value) END, r.id
        FROM resources AS r NOT INDEXED, json_each(json_extract(r.doc, {paths})) AS v
        WHERE r.type = '{rtype.name}' AND v.type = 'text'
        ORDER BY 1, 2, 3"""

def _drop_value_keys_foreign_key(conn: sqlite3.Connection) -> None:
    """value_keys without `REFERENCES resources (id) ON DELETE CASCADE`, by the procedure SQLite
    documents for removing a FOREIGN KEY constraint (lang_altertable.html, "Making Other Kinds Of
    Table Schema Changes"): the constraint is not part of the stored rows, so the table's
    definition is rewritten in place instead of copying every row (14 s and a 500 MB WAL at
    100,000 users). The schema version moves so that every other connection re-reads it."""
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    (definition,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'value_keys'").fetchone()
    without = definition.replace(" REFERENCES resources (id) ON DELETE CASCADE", "")
    if without == definition:
        raise StorageError("value_keys: its foreign key is not where this migration expects it")
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'value_keys'", (without,))
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")


# Each migration is applied in one transaction together with its PRAGMA user_version bump. A step
# is a statement, or a function of the connection for what one statement cannot say.
MigrationStep = str | Callable[[sqlite3.Connection], None]
MIGRATIONS: tuple[tuple[MigrationStep, ...], ...] = (
    (
        """CREATE TABLE resources (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL CHECK (type IN ('User', 'Group')),
            name_key TEXT NOT NULL,
            external_id TEXT,
            display TEXT NOT NULL,
            doc TEXT NOT NULL,
            secret TEXT,
            version INTEGER NOT NULL,
            created TEXT NOT NULL,
            last_modified TEXT NOT NULL
        )""",
        # name_key: the case-folded userName (Users) or displayName (Groups), unique per type.
        "CREATE UNIQUE INDEX resources_name_key ON resources (type, name_key)",
        "CREATE INDEX resources_external_id ON resources (type, external_id)",
        "CREATE INDEX resources_last_modified ON resources (type, last_modified)",
        """CREATE TABLE members (
            group_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
            member_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
            PRIMARY KEY (group_id, member_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX members_by_member ON members (member_id, group_id)",
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (
        # Indexed keys of multi-valued sub-attributes (emails.value) so `emails.value eq` and
        # Entra's `emails[type eq "work"].value eq` are index lookups at a million users.
        """CREATE TABLE value_keys (
            attr TEXT NOT NULL,
            key TEXT NOT NULL,
            resource_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
            PRIMARY KEY (attr, key, resource_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX value_keys_by_resource ON value_keys (resource_id)",
        """INSERT OR IGNORE INTO value_keys (attr, key, resource_id)
           SELECT 'emails.value', scim_fold(json_extract(e.value, '$.value')), r.id
           FROM resources AS r, json_each(r.doc, '$.emails') AS e
           WHERE r.type = 'User' AND json_extract(e.value, '$.value') IS NOT NULL""",
    ),
    (
        # List pages walk resources of one type in id order (the stable order of every page)
        # through this index instead of sorting the whole table for each page; the externalId
        # and lastModified indexes end in id too, so a lookup is also in page order and SQLite
        # keeps preferring them (Entra matches by externalId, SailPoint's delta by lastModified).
        "CREATE INDEX resources_type_id ON resources (type, id)",
        "DROP INDEX resources_external_id",
        "CREATE INDEX resources_external_id ON resources (type, external_id, id)",
        "DROP INDEX resources_last_modified",
        "CREATE INDEX resources_last_modified ON resources (type, last_modified, id)",
    ),
    (
        # Keys of every singular string attribute stored in the document (name.familyName, title,
        # the Enterprise department...), so `co`, `sw`, `eq`... on them never parse JSON (issue #4).
        "DROP INDEX value_keys_by_resource",
        *(_backfill_singular_values(rtype) for rtype in RESOURCE_TYPES.values()
          if any(not a.attr.multi_valued for a in INDEXED_ATTRIBUTES[rtype.name])),
        "CREATE INDEX value_keys_by_resource ON value_keys (resource_id)",
    ),
    (
        # A write inserts one index entry per key: value_keys_by_resource doubled them, and with
        # the foreign key's check of the parent row made a POST's keys cost twice what they do
        # without (POST +7.0% +- 3.3% at 16 connections, docs/benchmarks.md "Session 7"). They
        # served only ON DELETE CASCADE; a delete now removes the keys its document has, by
        # their primary key, as an update already removes the ones it changed.
        _drop_value_keys_foreign_key,
        "DROP INDEX value_keys_by_resource",
    ),
)


class StorageError(Exception):
    """The database cannot be used (newer schema, unreadable file, I/O error)."""


@dataclass(slots=True)
class Row:
    """A stored resource: its attributes document, the server-managed columns and, when a read
    asked for them (`Related`), its membership edges and its manager's display name."""

    id: str
    type: str
    doc: dict[str, Any]
    version: int
    created: str
    last_modified: str
    secret: str | None = None
    edges: list[MemberRef] | None = None  # None: not read
    manager_display: str | None = None  # None: not read, no manager, or one this directory does not hold

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def with_related(self, edges: list[MemberRef] | None, manager_display: str | None) -> Row:
        """This row with its relations as a read found them. Built directly: dataclasses.replace
        looks the fields up again on every call, ~10 µs, inside a write's transaction."""
        return Row(self.id, self.type, self.doc, self.version, self.created, self.last_modified, self.secret, edges,
                   manager_display)


@dataclass(frozen=True, slots=True)
class MemberRef:
    """A membership edge as rendered: the other side's id, resource type and display name."""

    id: str
    type: str
    display: str


def _fold_sql(value: object) -> object:
    return fold_case(value) if isinstance(value, str) else value


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    # Deterministic, so SQLite may use it in expressions; queries only, never in indexes, so
    # other tools can still open the file (pitfalls: SQLite).
    conn.create_function("scim_fold", 1, _fold_sql, deterministic=True)
    return conn


def _row(record: Sequence[Any]) -> Row:
    """A Row from the three columns `row_columns` selects (and no sort keys)."""
    return _row_and_keys(record)[0]


def _row_and_keys(record: Sequence[Any]) -> tuple[Row, tuple[Any, ...]]:
    fields, doc, edges = record
    rid, rtype, version, created, modified, secret, manager_display, *keys = orjson.loads(fields)
    return (Row(rid, rtype, orjson.loads(doc), version, created, modified, secret, _edges(edges), manager_display),
            tuple(keys))


def _edges(array: str | None) -> list[MemberRef] | None:
    return None if array is None else [MemberRef(*edge) for edge in orjson.loads(array)]


def row_columns(related: Related, keys: Sequence[str] = ()) -> str:
    """What a row query selects: the row's small fields, its manager's name and any sort `keys`
    as one JSON array, then its document, then its groups or members. CPython's sqlite3 module
    releases the GIL for each column of each row it fetches, and under load each release is a
    hand-off: a column per value made a GET's row 10 of them, these three make 4
    (docs/benchmarks.md, "Session 8"). The document and the edges stay columns of their own:
    inside the array SQLite would parse and write each of them again. Sort keys are strings,
    integers or NULL (no attribute of these schemas is decimal), which JSON carries exactly."""
    edges, manager = _related_sql(related)
    extra = "".join(f", {key}" for key in keys)
    return (f"json_array(r.id, r.type, r.version, r.created, r.last_modified, r.secret, {manager}{extra}), r.doc, "
            f"{edges}")


# A User's groups and a Group's members, as one JSON array of [id, type, display] per row, in id
# order (the index order of members' primary key and of members_by_member).
_EDGES_SQL = {
    USER_TYPE.name: "(SELECT json_group_array(json_array(e.id, e.type, e.display)) FROM (SELECT g.id, g.type, g.display "
                    "FROM members AS m JOIN resources AS g ON g.id = m.group_id WHERE m.member_id = r.id "
                    "ORDER BY m.group_id) AS e)",
    GROUP_TYPE.name: "(SELECT json_group_array(json_array(e.id, e.type, e.display)) FROM (SELECT t.id, t.type, t.display "
                     "FROM members AS m JOIN resources AS t ON t.id = m.member_id WHERE m.group_id = r.id "
                     "ORDER BY m.member_id) AS e)",
}
# manager.displayName is readOnly and comes from the manager's own User (RFC 7643 §4.3).
_MANAGER_SQL = (f"CASE WHEN r.type = 'User' THEN (SELECT mgr.display FROM resources AS mgr WHERE mgr.id = "
                f"json_extract(r.doc, '$.\"{ENTERPRISE_URN}\".manager.value')) END")


@dataclass(frozen=True, slots=True)
class Related:
    """What a read returns with each row, in the same statement: one statement is one snapshot (a
    user's groups are those of the same moment as the user), and under load each statement is
    GIL hand-offs (docs/benchmarks.md). Projections that drop `groups`, `members` or `manager`
    (Entra's `excludedAttributes=members`) ask for nothing, and a 100,000-member group costs nothing."""

    edges: frozenset[str] = frozenset()  # the type names whose groups/members to read
    manager: bool = False

    def columns(self) -> str:
        """The edges and the manager's name as two columns (NULL when not asked for)."""
        return ", ".join(_related_sql(self))


@functools.lru_cache(maxsize=16)  # at most 2 edge types x manager or not: 8 distinct values
def _related_sql(related: Related) -> tuple[str, str]:
    """(edges, manager's name) as SQL expressions over `r`."""
    edges = [f"WHEN '{name}' THEN {_EDGES_SQL[name]}" for name in sorted(related.edges)]
    return (f"CASE r.type {' '.join(edges)} END" if edges else "NULL"), (_MANAGER_SQL if related.manager else "NULL")


NOTHING_RELATED = Related()

MAX_GROUP = 32  # writes per group commit: bounds how long the first of a group waits


@dataclass(slots=True)
class _Group:
    """Writes sharing one transaction and its COMMIT."""

    size: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    changes_at_begin: int = 0  # the connection's total_changes when the transaction began


class _Checkpointer:
    """Copies committed pages from the WAL into the database file, on its own thread and
    connection, so that no write waits for it.

    SQLite runs its automatic checkpoint inside the COMMIT that takes the WAL past
    wal_autocheckpoint pages: that write (and every write queued behind it) waits while ~1,000
    pages are copied and the database file is fsynced. Measured in-process on POST /Users:
    checkpoints were 40-50% of all COMMIT time, p99 of a COMMIT 15 ms instead of 2.4 ms.

    PASSIVE never waits for readers or writers (https://sqlite.org/c3ref/wal_checkpoint_v2.html),
    and checkpoints do not affect durability: a write is durable once its COMMIT has synced the
    WAL (synchronous=FULL). The thread starts with the first commit, so read-only users of a
    Store (admin commands) never start it.
    """

    def __init__(self, path: Path, interval: float = CHECKPOINT_INTERVAL_SECONDS) -> None:
        self._path = path
        self._interval = interval
        self._pending = threading.Event()  # commits not yet checkpointed
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def committed(self) -> None:
        """Called after each COMMIT; cheap when a checkpoint is already pending. Never raises."""
        if self._pending.is_set() or self._stopping.is_set():
            return
        if self._thread is None:
            self._start()
        self._pending.set()

    def stop(self) -> None:
        """Finish the checkpoint in progress, if any, and end the thread."""
        self._stopping.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopping.is_set():
                return
            thread = threading.Thread(target=self._run, name="scimd-checkpoint", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had: the inline checkpoint still bounds the WAL
                log.warning("cannot start the background WAL checkpoint: %s", exc)
                self._stopping.set()
                return
            self._thread = thread

    def _run(self) -> None:
        try:
            conn = _connect(self._path)
        except sqlite3.Error as exc:  # the writer's inline checkpoint still bounds the WAL
            log.warning("cannot open a connection for background WAL checkpoints: %s", exc)
            return
        try:
            while True:
                self._pending.wait()
                if self._stopping.is_set():
                    return
                self._pending.clear()
                self._checkpoint(conn)
                # Commits arriving meanwhile wait for the next round: one checkpoint serves many.
                if self._stopping.wait(self._interval):
                    return
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int] | None:
        """(busy, frames in the WAL, frames copied), or None when the checkpoint failed."""
        try:
            return tuple(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())  # type: ignore[return-value]
        except sqlite3.Error as exc:  # the writer's inline checkpoint still bounds the WAL
            log.warning("background WAL checkpoint failed: %s", exc)
            return None


class Store:
    """The database file: one writer connection behind a lock, one reader connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued = 0  # threads waiting for the writer lock
        self._group: _Group | None = None  # the open group-commit transaction
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._checkpointer = _Checkpointer(path)
        try:
            self._writer = _connect(path)
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {INLINE_CHECKPOINT_PAGES}")
            self._writer.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            migrate(self._writer)
            self.cursor_key = self._setting("cursor_key", lambda: secrets.token_hex(32))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from exc

    # -- connections and transactions ------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: readers never block the writer)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StorageError("the store is closed")
            conn = _connect(self.path)
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction, so the count and the page of a list come from one snapshot."""
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One write, all or nothing, returning only once it is committed (synchronous=FULL).

        Group commit: a write that finds others queued for the writer lock leaves its
        transaction open for them and waits; the last of the group (no one queued, or
        MAX_GROUP writes) commits for all. Under load one fsync then serves several writes, and
        a COMMIT's GIL hand-offs are paid once per group instead of once per write
        (docs/benchmarks.md). If the COMMIT fails, every write of the group raises: none was
        acknowledged.

        The first write of a group is alone in the transaction while it runs, so if it fails it
        rolls the transaction back. Each later one runs in a savepoint, undone alone if it
        fails. Only they pay for it: inside a savepoint SQLite copies the original of every page
        a statement changes to a sub-journal (measured: a Bulk of 1,000 creates inside one
        outer savepoint took 1.0 s instead of 0.7 s)."""
        with self._queue_lock:
            self._queued += 1
        self._write_lock.acquire()
        with self._queue_lock:
            self._queued -= 1
        try:
            group, savepoint = self._join_group()
        except BaseException as exc:
            self._abandon_group(exc)
            raise
        conn = self._writer
        try:
            yield Tx(conn)
            if savepoint:
                conn.execute("RELEASE write")
        except BaseException:
            self._undo_own_write(group, savepoint)
            self._leave_group(group)
            raise
        self._leave_group(group)
        if group.error is not None:
            raise StorageError(f"the write could not be committed: {group.error}") from group.error

    def _join_group(self) -> tuple[_Group, bool]:
        """Called with the writer lock held: the open group (and a savepoint in it), or a new one."""
        if self._closed:
            raise StorageError("the store is closed")
        group = self._group
        if group is None:
            self._writer.execute("BEGIN IMMEDIATE")
            group = self._group = _Group(size=1, changes_at_begin=self._writer.total_changes)
            return group, False
        group.size += 1
        self._writer.execute("SAVEPOINT write")
        return group, True

    def _abandon_group(self, exc: BaseException) -> None:
        """Called with the writer lock held when joining failed (the store closed, a SAVEPOINT
        refused): writes of the open group wait for a COMMIT this thread was to carry on, so
        they fail with it instead of waiting for a writer that may never come."""
        group = self._group
        if group is None:
            self._write_lock.release()
            return
        group.error = exc
        self._leave_group(group)

    def _undo_own_write(self, group: _Group, savepoint: bool) -> None:
        try:
            if savepoint:
                self._writer.execute("ROLLBACK TO write")
                self._writer.execute("RELEASE write")
            elif self._writer.in_transaction:
                self._writer.execute("ROLLBACK")  # the group holds this write alone
        except sqlite3.Error as exc:
            # SQLite rolled the whole transaction back itself (an I/O error, disk full): the
            # group's other writes went with it.
            group.error = exc

    def _leave_group(self, group: _Group) -> None:
        """Called with the writer lock held; returns without it, once the group is decided."""
        open_transaction = self._writer.in_transaction
        with self._queue_lock:
            hand_over = open_transaction and self._queued > 0 and group.size < MAX_GROUP and group.error is None
        if hand_over:
            self._write_lock.release()
            group.done.wait()
            return
        changed = False
        try:
            if group.error is None and open_transaction:
                self._writer.execute("COMMIT")
                changed = self._writer.total_changes != group.changes_at_begin
        except BaseException as exc:
            group.error = exc
        finally:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            self._group = None
            group.done.set()
            self._write_lock.release()
        if changed:
            self._checkpointer.committed()  # after the answer is decided: it cannot fail a committed write

    def close(self) -> None:
        """Close every connection; the WAL is checkpointed by the last close."""
        self._checkpointer.stop()
        with self._write_lock:
            self._closed = True
            if self._group is not None:  # its writers wait for a COMMIT that will not come
                self._group.error = StorageError("the store was closed before the write was committed")
                self._group.done.set()
                self._group = None
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            self._writer.close()

    def ping(self) -> None:
        """A real round trip for /health: raises StorageError when the database fails."""
        try:
            self.reader().execute("SELECT count(*) FROM settings").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(str(exc)) from exc

    def _setting(self, name: str, default: Any) -> str:
        with self.write() as tx:
            row = tx.conn.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
            if row:
                return str(row[0])
            value = default()
            tx.conn.execute("INSERT INTO settings (name, value) VALUES (?, ?)", (name, value))
            return str(value)

    # -- reads -----------------------------------------------------------------------------

    def view(self) -> View:
        """Reads on this thread's connection, outside any transaction."""
        return View(self.reader())

    def counts(self) -> dict[str, int]:
        return count_resources(self.reader())


def count_resources(conn: sqlite3.Connection) -> dict[str, int]:
    users, active = conn.execute(
        "SELECT count(*), coalesce(sum(json_extract(doc, '$.active') IS NOT 0), 0) FROM resources WHERE type = 'User'"
    ).fetchone()
    groups = conn.execute("SELECT count(*) FROM resources WHERE type = 'Group'").fetchone()[0]
    edges = conn.execute("SELECT count(*) FROM members").fetchone()[0]
    return {"users": users, "active_users": active, "groups": groups, "memberships": edges}


def get_row(conn: sqlite3.Connection, rtype: ResourceType, rid: str, related: Related = NOTHING_RELATED) -> Row | None:
    record = conn.execute(f"SELECT {row_columns(related)} FROM resources AS r WHERE r.id = ? AND r.type = ?",
                          (rid, rtype.name)).fetchone()
    return _row(record) if record else None


def rows_and_keys(records: Iterable[Sequence[Any]]) -> tuple[list[Row], list[tuple[Any, ...]]]:
    """Rows selected with `row_columns(related, keys)`, and each row's sort keys."""
    pairs = [_row_and_keys(record) for record in records]
    return [row for row, _ in pairs], [keys for _, keys in pairs]


_DERIVED_COLUMNS = ("name_key", "external_id", "display")


def _columns(rtype: ResourceType, doc: dict[str, Any]) -> tuple[str, str | None, str]:
    """name_key, external_id and display, derived from the document (never stored twice by hand)."""
    if rtype is GROUP_TYPE:
        name = doc["displayName"]
        return fold_case(name), doc.get("externalId"), name
    return fold_case(doc["userName"]), doc.get("externalId"), doc.get("displayName") or doc["userName"]


def _dump(doc: dict[str, Any]) -> str:
    return orjson.dumps(doc).decode()


def value_keys(rtype: ResourceType, doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(value_keys.attr, key) of every indexed string value of a document, folded with
    `fold_case` unless caseExact. A value of another type never matches a string comparison
    (scimd/match.py), so it has no key. Runs once per POST and twice per PATCH or PUT, inside
    the write's transaction, so it walks what the document holds, not every indexed attribute."""
    found: set[tuple[str, str]] = set()
    for holder_id, plans in _KEY_PLANS[rtype.name]:
        holder = doc if holder_id is None else doc.get(holder_id)
        if not isinstance(holder, dict):
            continue
        for attr_name, value in holder.items():
            plan = plans.get(attr_name)
            if plan is None:
                continue
            if plan.direct is not None and isinstance(value, str):
                key, case_exact = plan.direct
                found.add((key, value if case_exact else fold_case(value)))
            if plan.subs:
                for element in value if plan.multi_valued and isinstance(value, list) else (value,):
                    if isinstance(element, dict):
                        for key, sub_name, case_exact in plan.subs:
                            if isinstance(sub_value := element.get(sub_name), str):
                                found.add((key, sub_value if case_exact else fold_case(sub_value)))
    return found


# Keys travel as one JSON array of [attr, key] pairs, read back with json_each.
_KEY_PAIR = "json_extract(value, '$[0]'), json_extract(value, '$[1]')"


def _dump_keys(keys: set[tuple[str, str]]) -> str:
    return orjson.dumps(sorted(keys)).decode()


class View:
    """Reads on one connection: the thread's reader, a read snapshot or a write transaction, so a
    response is rendered from the same state its query or write saw."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, rtype: ResourceType, rid: str, related: Related = NOTHING_RELATED) -> Row | None:
        return get_row(self.conn, rtype, rid, related)

    def with_related(self, row: Row, related: Related) -> Row:
        """`row` with its related data as this connection sees it now (after a write, in its
        transaction: the response shows what was committed)."""
        if related == NOTHING_RELATED:
            return row
        edges, manager_display = self.conn.execute(f"SELECT {related.columns()} FROM resources AS r WHERE r.id = ?",
                                                   (row.id,)).fetchone()
        return row.with_related(_edges(edges), manager_display)

    def _column_of(self, column: str, ids: Iterable[str]) -> dict[str, str]:
        """id -> `column` for each id that exists, in chunks that stay under SQLite's variable limit."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(f"SELECT id, {column} FROM resources WHERE id IN ({marks})", chunk))
        return found


class Tx(View):
    """Statements that run inside one write transaction."""

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit (one Bulk operation): rolled back alone on error (RFC 7644 §3.7)."""
        self.conn.execute("SAVEPOINT op")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK TO op")
            self.conn.execute("RELEASE op")
            raise
        self.conn.execute("RELEASE op")

    def insert(self, rtype: ResourceType, rid: str, doc: dict[str, Any], secret: str | None) -> Row:
        stamp = now()
        name_key, external_id, display = _columns(rtype, doc)
        try:
            self.conn.execute(
                "INSERT INTO resources (id, type, name_key, external_id, display, doc, secret, version, created, "
                "last_modified) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (rid, rtype.name, name_key, external_id, display, _dump(doc), secret, stamp, stamp))
        except sqlite3.IntegrityError as exc:
            raise _uniqueness(rtype) from exc
        self._index_values(rtype, rid, doc)
        return Row(rid, rtype.name, doc, 1, stamp, stamp, secret)

    def update(self, rtype: ResourceType, row: Row, doc: dict[str, Any], secret: str | None) -> Row:
        """Write a new document; the version moves only because something changed."""
        stamp = now()
        new = dict(zip(_DERIVED_COLUMNS, _columns(rtype, doc)))
        old = dict(zip(_DERIVED_COLUMNS, _columns(rtype, row.doc)))
        # Only the derived columns that changed: SQLite rewrites the entries of every index on a
        # column the SET names, even to the same value (two random index pages for a PATCH of title).
        changed = [name for name in _DERIVED_COLUMNS if new[name] != old[name]]
        sets = "".join(f"{name} = ?, " for name in changed)
        try:
            self.conn.execute(
                f"UPDATE resources SET {sets}doc = ?, secret = ?, version = version + 1, last_modified = ? WHERE id = ?",
                (*(new[name] for name in changed), _dump(doc), secret, stamp, row.id))
        except sqlite3.IntegrityError as exc:
            raise _uniqueness(rtype) from exc
        self._reindex_values(rtype, row.id, row.doc, doc)
        if new["display"] != old["display"]:
            # Members show a group's name (groups.display) and groups show a member's (members.display).
            self._touch_neighbours(row.id)
        return Row(row.id, row.type, doc, row.version + 1, row.created, stamp, secret)

    def touch(self, row: Row) -> Row:
        """Bump version and lastModified when only memberships changed."""
        stamp = now()
        self.conn.execute("UPDATE resources SET version = version + 1, last_modified = ? WHERE id = ?", (stamp, row.id))
        return Row(row.id, row.type, row.doc, row.version + 1, row.created, stamp, row.secret)

    def delete(self, rtype: ResourceType, row: Row) -> None:
        """Memberships go with it (ON DELETE CASCADE) and its value keys are deleted by their
        primary key, in the same transaction; the groups it leaves and the members it had change
        too, so their versions move."""
        self._touch_neighbours(row.id)
        self._delete_keys(row.id, value_keys(rtype, row.doc))
        self.conn.execute("DELETE FROM resources WHERE id = ?", (row.id,))

    def _touch_ids(self, ids: Sequence[str]) -> None:
        """A new version for resources whose computed attributes (groups, members) changed, so
        their ETags never vouch for stale content (RFC 7644 §3.14)."""
        stamp = now()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            self.conn.execute(f"UPDATE resources SET version = version + 1, last_modified = ? WHERE id IN ({marks})",
                              [stamp, *chunk])

    def _touch_neighbours(self, rid: str) -> None:
        """Both sides of rid's memberships: O(its memberships), which a rename or delete costs anyway."""
        self.conn.execute(
            "UPDATE resources SET version = version + 1, last_modified = ? WHERE id IN "
            "(SELECT member_id FROM members WHERE group_id = ? UNION SELECT group_id FROM members WHERE member_id = ?)",
            (now(), rid, rid))

    def _index_values(self, rtype: ResourceType, rid: str, doc: dict[str, Any]) -> None:
        """The value_keys rows of a new document: O(its indexed attributes)."""
        self._insert_keys(rid, value_keys(rtype, doc))

    def _reindex_values(self, rtype: ResourceType, rid: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Only the keys that changed: a PATCH of `title` deletes one row and inserts one instead
        of rewriting all twenty of a User, and writes fewer pages to the WAL it must fsync."""
        before, after = value_keys(rtype, old), value_keys(rtype, new)
        self._delete_keys(rid, before - after)
        self._insert_keys(rid, after - before)

    def _delete_keys(self, rid: str, keys: set[tuple[str, str]]) -> None:
        # By the primary key: value_keys has no index by resource (migration 5).
        if keys:
            self.conn.execute(f"DELETE FROM value_keys WHERE (attr, key, resource_id) IN "
                              f"(SELECT {_KEY_PAIR}, ? FROM json_each(?))", (rid, _dump_keys(keys)))

    def _insert_keys(self, rid: str, keys: set[tuple[str, str]]) -> None:
        # One statement for all of them, not executemany: each SQLite step releases the GIL, and
        # under load every release is a thread switch while the write lock is held (docs/benchmarks.md).
        # OR IGNORE: a key already there is the row wanted; a write must not fail on it.
        if keys:
            self.conn.execute(f"INSERT OR IGNORE INTO value_keys (attr, key, resource_id) SELECT {_KEY_PAIR}, ? "
                              f"FROM json_each(?)", (rid, _dump_keys(keys)))

    # -- membership: every change costs O(changed members), never O(group size) -------------

    def member_types(self, ids: Iterable[str]) -> dict[str, str]:
        """The resource type of each id that exists (Users and Groups may both be members)."""
        return self._column_of("type", ids)

    def add_members(self, group_id: str, ids: Iterable[str]) -> int:
        """Add members; the ones really added have a changed `groups` attribute, so they move too."""
        added = [mid for mid in ids if self.conn.execute(
            "INSERT OR IGNORE INTO members (group_id, member_id) VALUES (?, ?)", (group_id, mid)).rowcount]
        self._touch_ids(added)
        return len(added)

    def remove_members(self, group_id: str, ids: Iterable[str]) -> int:
        removed = [mid for mid in ids if self.conn.execute(
            "DELETE FROM members WHERE group_id = ? AND member_id = ?", (group_id, mid)).rowcount]
        self._touch_ids(removed)
        return len(removed)

    def has_members(self, group_id: str, ids: Sequence[str]) -> set[str]:
        """Which of `ids` are members already: a primary-key probe per id."""
        present: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            present.update(mid for (mid,) in self.conn.execute(
                f"SELECT member_id FROM members WHERE group_id = ? AND member_id IN ({marks})", [group_id, *chunk]))
        return present

    def member_ids(self, group_id: str) -> list[str]:
        return [mid for (mid,) in self.conn.execute(
            "SELECT member_id FROM members WHERE group_id = ? ORDER BY member_id", (group_id,))]

    def would_cycle(self, group_id: str, member_ids: Sequence[str]) -> bool:
        """True when adding these members would make the group contain itself (nested groups)."""
        if group_id in member_ids:
            return True
        # Walk down from each new member; reaching group_id closes a loop.
        sql = ("WITH RECURSIVE inside(id) AS (SELECT ? UNION SELECT m.member_id FROM members AS m "
               "JOIN inside ON m.group_id = inside.id) SELECT 1 FROM inside WHERE id = ? LIMIT 1")
        return any(self.conn.execute(sql, (mid, group_id)).fetchone() for mid in member_ids)


def _uniqueness(rtype: ResourceType) -> errors.Uniqueness:
    attr = "displayName" if rtype is GROUP_TYPE else "userName"
    return errors.Uniqueness(f"{rtype.name} {attr} is already in use (compared case-insensitively).")


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to the newest schema, one transaction per version (PRAGMA user_version)."""
    current = schema_version(conn)
    _check_not_newer(current)
    for version in range(current, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[version]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _check_not_newer(version: int) -> None:
    if version > len(MIGRATIONS):
        raise StorageError(
            f"the database schema is version {version}, newer than this scimd understands ({len(MIGRATIONS)}): "
            "upgrade scimd or restore a backup made by this version")


# -- whole-database operations for the admin commands (scimd backup, restore) ---------------


def open_existing(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing database file: never created, never migrated, so a
    backup can read the database a daemon (of any version) is serving without writing to it."""
    if not path.is_file():
        raise StorageError(f"no database at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        # A file that is not SQLite fails here, on its first read, rather than later.
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    return conn


def check_integrity(conn: sqlite3.Connection) -> None:
    """Raise StorageError unless `PRAGMA integrity_check` finds the file intact."""
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        raise StorageError(f"integrity check failed: {exc}") from exc
    if problems != ["ok"]:
        raise StorageError("integrity check failed: " + "; ".join(problems[:3]))


def check_schema(conn: sqlite3.Connection) -> int:
    """The schema version of a scimd database this scimd can open (migrating it if older)."""
    version = schema_version(conn)
    if version < 1:
        raise StorageError("not a scimd database (schema version 0)")
    _check_not_newer(version)
    return version


def copy_database(conn: sqlite3.Connection, target: Path) -> None:
    """A consistent copy through the SQLite backup API in one step: one read snapshot, which under
    WAL never makes the daemon's writers wait. The copy is switched out of WAL so it is one
    self-contained file (no -wal/-shm beside it); the daemon turns WAL back on when it opens it."""
    try:
        dest = sqlite3.connect(target, isolation_level=None)
        try:
            conn.backup(dest)
            dest.execute("PRAGMA journal_mode = DELETE")
        finally:
            dest.close()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot copy the database to {target}: {exc}") from exc
