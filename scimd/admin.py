"""Admin commands: `scimd backup`, `restore`, `export`, `import` and `stats`, and the data
directory lock that tells them (and a second daemon) that a daemon is serving.

They read the same SCIM_* environment as the daemon and exit 0 on success, 1 when the work
failed (one line on stderr says why), 2 on bad usage or configuration. Reads and writes go
through the same code as the HTTP API: Directory for writes (so validation and uniqueness are
identical), render/projection for what GET returns.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sqlite3
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import orjson

from scimd import errors
from scimd.config import Config, load
from scimd.directory import Directory, related_for
from scimd.filter import AttrPath, Compare
from scimd.resource import parse_members, parse_projection, parse_resource
from scimd.schema import GROUP_TYPE, RESOURCE_TYPES, USER_TYPE, ResourceType, fold_case
from scimd.sql import find
from scimd.store import (
    Row, StorageError, Store, check_integrity, check_schema, copy_database, count_resources,
    open_existing, schema_version,
)

EXIT_OK, EXIT_FAILED = 0, 1
LOCK_NAME = "scimd.lock"
# Export pages: large, because each page also recounts the total (sql.find); each row brings its
# memberships in the same statement (store.Related).
PAGE_SIZE = 5000
# What import asks Directory to render of each resource it writes: only its id.
_ID_ONLY = {rtype: parse_projection(rtype, ["id"], []) for rtype in (USER_TYPE, GROUP_TYPE)}


class Failed(Exception):
    """The work could not be done; the message is the one line the operator sees."""


class DataDirInUse(Exception):
    """Another process (a serving daemon, or a restore) holds the data directory lock."""


def register(commands: Any) -> None:
    """Add the admin subcommands to `scimd`'s argparse subparsers."""
    backup = commands.add_parser("backup", help="copy the database while the daemon serves",
                                 description="A consistent online copy of the database (SQLite backup API), "
                                 "checked with PRAGMA integrity_check. Safe while the daemon serves and writes.")
    backup.add_argument("path", type=Path, metavar="PATH", help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    backup.set_defaults(run=_guarded("backup", cmd_backup))

    restore = commands.add_parser("restore", help="replace the database with a backup (daemon stopped)",
                                  description="Replace the database with a backup after checking it (SQLite, "
                                  "integrity, schema version). Refused while a daemon serves the data directory.")
    restore.add_argument("path", type=Path, metavar="PATH", help="a file written by `scimd backup`")
    restore.set_defaults(run=_guarded("restore", cmd_restore))

    export = commands.add_parser("export", help="write every User and Group as SCIM JSON Lines",
                                 description="Every User, then every Group, as GET returns them (with members and "
                                 "groups, never passwords), one JSON document per line.")
    export.add_argument("--output", "-o", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    export.set_defaults(run=_guarded("export", cmd_export))

    load_cmd = commands.add_parser("import", help="load an export (or a ListResponse) idempotently and atomically",
                                   description="Upsert Users by userName and Groups by displayName (compared "
                                   "case-insensitively) from JSON Lines or a ListResponse document, then set each "
                                   "group's members as the file lists them. One transaction: all or nothing. "
                                   "Resources absent from the file are left alone; stored passwords are kept. A running "
                                   "daemon's writes wait while the import commits: import large files with the "
                                   "daemon stopped.")
    load_cmd.add_argument("file", type=Path, metavar="FILE", help="JSON Lines (as `scimd export` writes) or a "
                          "ListResponse JSON document")
    load_cmd.set_defaults(run=_guarded("import", cmd_import))

    stats = commands.add_parser("stats", help="count users, groups and memberships; database size",
                                description="Users, active users, groups, memberships, database size (file + WAL) "
                                "and schema version.")
    stats.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    stats.set_defaults(run=_guarded("stats", cmd_stats))


def _guarded(name: str, command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn an expected failure into one line on stderr and exit 1; ConfigError is left to main (exit 2)."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (Failed, DataDirInUse, StorageError, sqlite3.Error) as exc:
            print(f"scimd {name}: {exc}", file=sys.stderr)
        except OSError as exc:
            print(f"scimd {name}: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}",
                  file=sys.stderr)
        return EXIT_FAILED
    return run


# -- the data directory ----------------------------------------------------------------------


def make_data_dir(config: Config) -> None:
    """SCIM_DATA_DIR is created private (0700): it holds every identity and password hash."""
    os.makedirs(config.data_dir, mode=0o700, exist_ok=True)


def lock_data_dir(data_dir: Path) -> int:
    """Take SCIM_DATA_DIR/scimd.lock (an exclusive flock) and return its descriptor; the lock is
    held until the descriptor is closed or the process ends, even by kill -9, so it can never go
    stale. The holder's pid is written into the file for the refusal message."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise DataDirInUse(f"{data_dir} is in use by another scimd process (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


# -- backup and restore ----------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace) -> int:
    config = load()
    target: Path = args.path
    if target.exists() and not args.force:
        raise Failed(f"{target} exists: choose another path or pass --force to overwrite it")
    source = open_existing(config.database_path)
    try:
        with _staged(target) as staged:
            copy_database(source, staged)
            version, counts = _verify(staged)
    finally:
        source.close()
    print(f"backed up {_summary(counts)} (schema version {version}) to {target} ({_size(target.stat().st_size)})")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    config = load()
    source_path: Path = args.path
    make_data_dir(config)
    try:
        # Held while we work, so no daemon can start on a half-restored directory either.
        lock = lock_data_dir(config.data_dir)
    except DataDirInUse as exc:
        raise Failed(f"{exc}: stop the daemon, restore, then start it again") from None
    try:
        source = open_existing(source_path)
        try:
            check_integrity(source)
            check_schema(source)
            with _staged(config.database_path) as staged:
                copy_database(source, staged)
                version, counts = _verify(staged)
                # A -wal left by the old database would be replayed onto the new one: remove it first.
                for suffix in ("-wal", "-shm"):
                    Path(f"{config.database_path}{suffix}").unlink(missing_ok=True)
        finally:
            source.close()
    finally:
        os.close(lock)
    print(f"restored {_summary(counts)} (schema version {version}) from {source_path} into {config.database_path}")
    return EXIT_OK


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A private temporary file beside `target`, fsynced and renamed over it when the block
    succeeds (so `target` is never half written), removed when it fails."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    staged = Path(name)
    try:
        yield staged
        _fsync(staged)
        os.replace(staged, target)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    _fsync(target.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(path: Path) -> tuple[int, dict[str, int]]:
    """Check a fresh copy (a disk can fail while writing it) and count what it holds."""
    conn = open_existing(path)
    try:
        check_integrity(conn)
        return schema_version(conn), count_resources(conn)
    finally:
        conn.close()


# -- export and import -----------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    config = load()
    store = _open_store(config.database_path)
    try:
        if args.output is None:
            try:
                _export(store, config, sys.stdout.buffer)
                sys.stdout.flush()
            except BrokenPipeError:
                # The reader went away (`scimd export | head`): no traceback, and none at exit
                # when Python flushes stdout again.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise Failed("the output was closed before the export was complete") from None
        else:
            with _staged(args.output) as staged, staged.open("wb") as out:
                _export(store, config, out)
    finally:
        store.close()
    return EXIT_OK


def _export(store: Store, config: Config, out: BinaryIO) -> None:
    """Users then Groups, in id order, from one read snapshot: a group's members are exactly the
    users of the same file, however the daemon writes meanwhile."""
    directory = Directory(store, config.base_url)
    with store.read() as conn:
        totals = {rtype: find(conn, [rtype], None, None, False, 0, 0).total for rtype in (USER_TYPE, GROUP_TYPE)}
        with Progress("export", sum(totals.values())) as progress:
            for rtype in totals:
                projection = parse_projection(rtype, [], [])
                related = related_for([(rtype, projection)])
                after: tuple[Any, ...] | None = None
                while True:
                    page = find(conn, [rtype], None, None, False, 0, PAGE_SIZE, after, related=related)
                    if not page.rows:
                        break
                    for resource in directory.present(rtype, page.rows, projection):
                        out.write(orjson.dumps(resource) + b"\n")
                    progress.advance(len(page.rows))
                    after = page.keys[-1]


@dataclass(slots=True)
class Item:
    """One resource of an import file: where it is (for messages), its type, body and name."""

    where: str
    rtype: ResourceType
    body: dict[str, Any]
    name: str
    file_id: str | None


@dataclass(slots=True)
class Tally:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __str__(self) -> str:
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"


@dataclass(slots=True)
class ImportReport:
    users: Tally = field(default_factory=Tally)
    groups: Tally = field(default_factory=Tally)


def cmd_import(args: argparse.Namespace) -> int:
    config = load()
    try:
        items = read_import_file(args.file)
        make_data_dir(config)
        store = _open_store(config.database_path, create=True)
        try:
            report = import_items(store, config, items)
        finally:
            store.close()
    except Failed as exc:
        raise Failed(f"{exc} (nothing was imported)") from None
    print(f"imported {args.file}: users {report.users}; groups {report.groups}")
    return EXIT_OK


def read_import_file(path: Path) -> list[Item]:
    """Parse and validate every resource before the database is touched: JSON Lines, or one
    ListResponse document (RFC 7644 §3.4.2), as a single JSON value possibly spread over lines."""
    data = path.read_bytes()
    try:
        whole = orjson.loads(data)
    except orjson.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and _lowered(whole).get("resources") is not None:
        resources = _lowered(whole)["resources"]
        if not isinstance(resources, list):
            raise Failed(f"{path}: 'Resources' must be an array")
        entries = [(f"Resources[{n}]", resource) for n, resource in enumerate(resources)]
    else:
        entries = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {number}", orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise Failed(f"{path}: line {number}: not JSON ({exc})") from None
    items = [_item(f"{path}: {where}", resource) for where, resource in entries]
    _check_unique(items)
    return items


def _lowered(resource: dict[str, Any]) -> dict[str, Any]:
    """SCIM attribute names are case-insensitive (RFC 7643 §2.1)."""
    return {key.lower(): value for key, value in resource.items() if isinstance(key, str)}


def _item(where: str, resource: Any) -> Item:
    if not isinstance(resource, dict):
        raise Failed(f"{where}: not a JSON object")
    keys = _lowered(resource)
    rtype = _resource_type(keys)
    if rtype is None:
        raise Failed(f"{where}: neither a User nor a Group (no meta.resourceType or core schema URN in 'schemas')")
    try:
        draft = parse_resource(rtype, resource)
    except errors.ScimError as exc:
        raise Failed(f"{where}: {exc.detail}") from None
    file_id = keys.get("id")
    return Item(where, rtype, resource, draft.doc["displayName" if rtype is GROUP_TYPE else "userName"],
                file_id if isinstance(file_id, str) else None)


def _resource_type(keys: dict[str, Any]) -> ResourceType | None:
    meta = keys.get("meta")
    named = meta.get("resourceType") if isinstance(meta, dict) else None
    if isinstance(named, str) and named.lower() in RESOURCE_TYPES:
        return RESOURCE_TYPES[named.lower()]
    schemas = keys.get("schemas")
    listed = {urn.lower() for urn in schemas if isinstance(urn, str)} if isinstance(schemas, list) else set()
    return next((rtype for rtype in (USER_TYPE, GROUP_TYPE) if rtype.core.id.lower() in listed), None)


def _check_unique(items: list[Item]) -> None:
    """Two entries with one name would silently overwrite each other; two with one id make members ambiguous."""
    names: dict[tuple[str, str], str] = {}
    ids: dict[str, str] = {}
    for item in items:
        key = (item.rtype.name, fold_case(item.name))
        if key in names:
            raise Failed(f"{item.where}: {item.rtype.name} {item.name!r} is also at {names[key]}")
        names[key] = item.where
        if item.file_id is not None:
            if item.file_id in ids:
                raise Failed(f"{item.where}: id {item.file_id!r} is also at {ids[item.file_id]}")
            ids[item.file_id] = item.where


def import_items(store: Store, config: Config, items: list[Item]) -> ImportReport:
    """Users, then groups, then each group's members, all in one write transaction."""
    directory = Directory(store, config.base_url)
    users = [item for item in items if item.rtype is USER_TYPE]
    groups = [item for item in items if item.rtype is GROUP_TYPE]
    report = ImportReport()
    db_ids: dict[str, str] = {}  # an id in the file -> the id of the same resource in this database
    with store.write() as tx, Progress("import", len(items)) as progress:
        for item in users:
            existing = _find_by_name(tx.conn, item)
            with _failing_at(item):
                if existing is None:
                    rid = _created(directory.create(USER_TYPE, item.body, _ID_ONLY[USER_TYPE], tx=tx).resource)
                    report.users.created += 1
                else:
                    outcome = directory.replace(USER_TYPE, existing.id, item.body, None, _ID_ONLY[USER_TYPE], tx=tx)
                    _count(report.users, existing, outcome.etag)
                    rid = existing.id
            _remember(db_ids, item, rid)
            progress.advance()
        # Every group exists before any membership is set, so groups may nest in any file order.
        stored: list[tuple[Item, Row | None, str]] = []
        for item in groups:
            existing = _find_by_name(tx.conn, item)
            if existing is None:
                with _failing_at(item):
                    rid = _created(directory.create(GROUP_TYPE, _without_members(item.body), _ID_ONLY[GROUP_TYPE],
                                                    tx=tx).resource)
            else:
                rid = existing.id
            _remember(db_ids, item, rid)
            stored.append((item, existing, rid))
        for item, existing, rid in stored:
            with _failing_at(item):
                body = _without_members(item.body)
                body["members"] = [{"value": _mapped(db_ids, member["value"], item)}
                                   for member in parse_members(_lowered(item.body).get("members"))]
                outcome = directory.replace(GROUP_TYPE, rid, body, None, _ID_ONLY[GROUP_TYPE], tx=tx)
            if existing is None:
                report.groups.created += 1
            else:
                _count(report.groups, existing, outcome.etag)
            progress.advance()
    return report


def _find_by_name(conn: sqlite3.Connection, item: Item) -> Row | None:
    """The stored resource with this userName/displayName, compared as the unique index does."""
    attr = "displayName" if item.rtype is GROUP_TYPE else "userName"
    rows = find(conn, [item.rtype], Compare(AttrPath(None, attr, None), "eq", item.name), None, False, 0, 1).rows
    return rows[0] if rows else None


def _created(resource: dict[str, Any] | None) -> str:
    assert resource is not None  # _ID_ONLY always renders the id
    return str(resource["id"])


def _without_members(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key.lower() != "members"}


def _remember(db_ids: dict[str, str], item: Item, rid: str) -> None:
    if item.file_id is not None:
        db_ids[item.file_id] = rid


def _mapped(db_ids: dict[str, str], file_id: str, group: Item) -> str:
    if file_id not in db_ids:
        raise Failed(f"{group.where}: Group {group.name!r}: member {file_id!r} is not a User or Group of this file")
    return db_ids[file_id]


def _count(tally: Tally, before: Row, etag_after: str) -> None:
    if etag_after == before.etag:
        tally.unchanged += 1
    else:
        tally.updated += 1


@contextmanager
def _failing_at(item: Item) -> Iterator[None]:
    """A validation error names the entry of the file; raising it rolls the whole import back."""
    try:
        yield
    except errors.ScimError as exc:
        raise Failed(f"{item.where}: {item.rtype.name} {item.name!r}: {exc.detail}") from None


# -- stats -----------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    config = load()
    store = _open_store(config.database_path)
    try:
        numbers: dict[str, Any] = dict(store.counts())
        numbers["schema_version"] = schema_version(store.reader())
    finally:
        store.close()
    wal = Path(f"{config.database_path}-wal")
    numbers["database_bytes"] = config.database_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    numbers["database_path"] = str(config.database_path)
    if args.json:
        print(orjson.dumps(numbers).decode())
        return EXIT_OK
    for label, key in (("users", "users"), ("active users", "active_users"), ("groups", "groups"),
                       ("memberships", "memberships"), ("schema version", "schema_version")):
        print(f"{label:<16}{numbers[key]}")
    print(f"{'database size':<16}{_size(numbers['database_bytes'])} ({numbers['database_path']} and its WAL)")
    return EXIT_OK


# -- shared ----------------------------------------------------------------------------------


def _open_store(path: Path, create: bool = False) -> Store:
    """The Store, as the daemon opens it; commands that only read refuse to create an empty database."""
    if not create and not path.is_file():
        raise Failed(f"no database at {path} (check SCIM_DATA_DIR)")
    return Store(path)


def _summary(counts: dict[str, int]) -> str:
    return f"{counts['users']} users, {counts['groups']} groups"


def _size(size: int) -> str:
    """In KiB at least: a scimd database is never smaller than a few pages."""
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent for scripts and logs."""

    WIDTH = 30
    INTERVAL = 0.1  # redraws per second stay cheap even for a million resources

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = sys.stderr
        self.enabled = self.stream.isatty() and total > 0
        self._drawn_at = 0.0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.enabled and time.monotonic() - self._drawn_at >= self.INTERVAL:
            self._draw()

    def _draw(self) -> None:
        self._drawn_at = time.monotonic()
        filled = self.WIDTH * self.done // self.total
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                          f"{self.done}/{self.total} {100 * self.done // self.total}%")
        self.stream.flush()
