"""The directory of Users and Groups: the resource lifecycle rules of RFC 7644 §3.3-§3.6 over the
store, shared by the HTTP endpoints and Bulk so both have the same semantics and errors.

Every write runs in one transaction: version check (If-Match), validation, uniqueness and
membership changes commit together or not at all.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from scimd import cursor, errors, passwords, trace
from scimd.discovery import CURSOR_TIMEOUT_SECONDS
from scimd.filter import FilterError, to_text
from scimd.ids import new_id
from scimd.patch import MemberChanges, apply_patch, parse_patch_request
from scimd.resource import Draft, Projection, keeps, location, parse_projection, parse_resource, project, render
from scimd.schema import ENTERPRISE_URN, GROUP_TYPE, LIST_RESPONSE_URN, RESOURCE_TYPES, USER_TYPE, ResourceType
from scimd.search import Search
from scimd.sql import Page, SortError, find
from scimd.store import NOTHING_RELATED, MemberRef, Related, Row, Store, Tx


@dataclass(frozen=True, slots=True)
class Precondition:
    """An If-Match header: a set of opaque version tags, or `*` (RFC 7232 §3.1, RFC 7644 §3.14)."""

    tags: frozenset[str] = frozenset()
    any: bool = False

    def check(self, row: Row) -> None:
        if not self.any and str(row.version) not in self.tags:
            raise errors.InvalidVersion(f"The resource is at version {row.etag}, not the one given in If-Match.")


@dataclass(slots=True)
class Outcome:
    """What a write produced: the projected resource (None for 204) and its headers."""

    resource: dict[str, Any] | None
    etag: str
    location: str


class Directory:
    def __init__(self, store: Store, base_url: str) -> None:
        self.store = store
        self.base_url = base_url

    # -- reads ---------------------------------------------------------------------------

    def get(self, rtype: ResourceType, rid: str, projection: Projection) -> tuple[dict[str, Any], str]:
        row = self.store.view().get(rtype, rid, related_for([(rtype, projection)]))
        if row is None:
            raise _not_found(rtype, rid)
        return self.present(rtype, [row], projection)[0], row.etag

    def present(self, rtype: ResourceType, rows: Sequence[Row], projection: Projection) -> list[dict[str, Any]]:
        """Render and project rows read with `related_for` this projection."""
        return [project(rtype, self._render(rtype, row), projection) for row in rows]

    def _render(self, rtype: ResourceType, row: Row) -> dict[str, Any]:
        resource = render(rtype, row, self.base_url, row.edges)
        manager = resource.get(ENTERPRISE_URN, {}).get("manager")
        if row.manager_display is not None and isinstance(manager, dict):
            # manager.$ref and the readOnly manager.displayName come from the manager's own User
            # (RFC 7643 §4.3); a manager id this directory does not hold (yet: Entra sets managers
            # in a second pass) is returned as stored. A copy: the row's document is not ours.
            manager = {**manager, "$ref": location(self.base_url, "User", manager["value"]),
                       "displayName": row.manager_display}
            resource[ENTERPRISE_URN] = {**resource[ENTERPRISE_URN], "manager": manager}
        return resource

    def search(self, rtypes: list[ResourceType], query: Search, max_results: int) -> dict[str, Any]:
        """A ListResponse (RFC 7644 §3.4.2): index paging, or cursor paging when `cursor` is given (RFC 9865)."""
        count = min(max_results if query.count is None else query.count, max_results)
        if query.cursor is None and query.start_index == 1 and count > 0:
            # A lookup by filter (Entra's and Okta's `userName eq`) is answered by its first page
            # alone: one statement is one snapshot, without the BEGIN and COMMIT of a read
            # transaction (each statement is a GIL hand-off under load: docs/benchmarks.md).
            page, _ = self._page(self.store.reader(), rtypes, query, count, counted=False)
            if page.total is not None:
                return _list_response(query, page, None, self._present_mixed(rtypes, page.rows, query))
        with self.store.read() as conn:
            page, next_cursor = self._page(conn, rtypes, query, count)
        return _list_response(query, page, next_cursor, self._present_mixed(rtypes, page.rows, query))

    def _page(self, conn: Any, rtypes: list[ResourceType], query: Search, count: int,
              counted: bool = True) -> tuple[Page, str | None]:
        related = related_for([(rtype, _projection(rtype, query)) for rtype in rtypes])
        try:
            if query.cursor is None:
                return find(conn, rtypes, query.filter, query.sort_by, query.descending, query.start_index - 1,
                            count, count=counted, related=related), None
            digest = cursor.query_digest([r.name for r in rtypes], query.filter and to_text(query.filter),
                                         query.sort_by and to_text(query.sort_by), query.descending)
            after = (cursor.decode(self.store.cursor_key, query.cursor, digest, CURSOR_TIMEOUT_SECONDS)
                     if query.cursor else None)
            # One row more than asked tells whether a next page exists.
            page = find(conn, rtypes, query.filter, query.sort_by, query.descending, 0, count + 1, after,
                        related=related)
        except SortError as exc:
            raise errors.InvalidValue(f"Invalid sortBy: {exc}.") from None
        except FilterError as exc:
            raise errors.InvalidFilter(str(exc)) from None
        if len(page.rows) <= count or count == 0:
            page.rows = page.rows[:count]
            return page, None
        page.rows = page.rows[:count]
        return page, cursor.encode(self.store.cursor_key, digest, page.keys[count - 1])

    def _present_mixed(self, rtypes: list[ResourceType], rows: list[Row], query: Search) -> list[Any]:
        """Render rows of one or several types (root /.search), keeping their order."""
        rendered: dict[str, dict[str, Any]] = {}
        for rtype in rtypes:
            of_type = [row for row in rows if row.type == rtype.name]
            for row, resource in zip(of_type, self.present(rtype, of_type, _projection(rtype, query))):
                rendered[row.id] = resource
        return [rendered[row.id] for row in rows]

    # -- writes ----------------------------------------------------------------------------

    @contextmanager
    def _writing(self, tx: Tx | None) -> Iterator[Tx]:
        if tx is not None:
            yield tx
        else:
            with self.store.write() as own:
                yield own

    def create(self, rtype: ResourceType, body: Any, projection: Projection | None, tx: Tx | None = None) -> Outcome:
        draft = _with_defaults(rtype, parse_resource(rtype, body))
        secret = passwords.hash_password(draft.password) if draft.password else None
        rid = new_id()  # before the write lock
        with self._writing(tx) as tx:
            row = tx.insert(rtype, rid, draft.doc, secret)
            if rtype is GROUP_TYPE and draft.members:
                tx.add_members(rid, self._checked_members(tx, rid, draft.members))
            row = self._answered(tx, rtype, row, projection, _as_new(rtype, row, projection))
        return self._outcome(rtype, row, projection)

    def replace(self, rtype: ResourceType, rid: str, body: Any, precondition: Precondition | None,
                projection: Projection | None, tx: Tx | None = None) -> Outcome:
        """PUT replaces every writable attribute (RFC 7644 §3.5.1)."""
        draft = parse_resource(rtype, body)
        with self._writing(tx) as tx:
            row = before = self._current(tx, rtype, rid, precondition, projection)
            if rtype is USER_TYPE:
                # A PUT that does not assert `active` keeps it (RFC 7644 §3.5.1 "not asserted"):
                # a client that does not manage status must never re-enable or clear a user.
                draft.doc.setdefault("active", row.doc.get("active", True))
            _check_immutable(rtype, row.doc, draft)
            # A PUT without a password keeps the stored one: Okta's PUT is a read-modify-write of
            # a GET that never returns it (RFC 7643 §4.1.1 `returned: never`, O15).
            secret = _new_secret(draft.password, row.secret)
            changed = draft.doc != row.doc or secret != row.secret
            if rtype is GROUP_TYPE:
                changed |= self._replace_members(tx, rid, draft.members or []) > 0
            if changed:
                row = tx.update(rtype, row, draft.doc, secret)
            row = self._answered(tx, rtype, row, projection, before)
        return self._outcome(rtype, row, projection)

    def patch(self, rtype: ResourceType, rid: str, body: Any, precondition: Precondition | None,
              projection: Projection | None, tx: Tx | None = None) -> Outcome:
        """PATCH (RFC 7644 §3.5.2): all operations apply or none; the version moves only on change."""
        operations = parse_patch_request(body)
        with self._writing(tx) as tx:
            row = before = self._current(tx, rtype, rid, precondition, projection)
            result = apply_patch(rtype, row.doc, operations, TxMembers(tx, rid))
            secret = _new_secret(result.password, row.secret)
            changed = result.doc != row.doc or secret != row.secret
            if rtype is GROUP_TYPE:
                changed |= self._apply_member_changes(tx, rid, result.members) > 0
            if result.doc != row.doc or secret != row.secret:
                row = tx.update(rtype, row, result.doc, secret)
            elif changed:
                row = tx.touch(row)
            row = self._answered(tx, rtype, row, projection, before)
        return self._outcome(rtype, row, projection)

    def delete(self, rtype: ResourceType, rid: str, precondition: Precondition | None, tx: Tx | None = None) -> None:
        with self._writing(tx) as tx:
            row = self._current(tx, rtype, rid, precondition)
            tx.delete(rtype, row)  # the groups it leaves (and members it had) get new versions there

    # -- helpers ---------------------------------------------------------------------------

    def _current(self, tx: Tx, rtype: ResourceType, rid: str, precondition: Precondition | None,
                 projection: Projection | None = None) -> Row:
        """The row a write starts from; for a user write that answers with the user, read with what
        the answer shows of others (see _outcome)."""
        wanted = rtype is USER_TYPE and projection is not None
        row = tx.get(rtype, rid, related_for([(rtype, projection)]) if wanted else NOTHING_RELATED)
        if row is None:
            raise _not_found(rtype, rid)
        if precondition is not None:
            precondition.check(row)
        return row

    def _answered(self, tx: Tx, rtype: ResourceType, row: Row, projection: Projection | None,
                  before: Row | None) -> Row:
        """The written row with what its answer shows of others, as of this transaction."""
        if projection is None:
            return row
        if before is not None and rtype is USER_TYPE and _manager_id(before.doc) == _manager_id(row.doc):
            # A write of a user cannot change the groups it is in, nor its manager's name unless
            # it changed its manager: what was read with the row before the write still holds,
            # and the answer needs no second statement (docs/benchmarks.md).
            return row.with_related(before.edges, before.manager_display)
        return tx.with_related(row, related_for([(rtype, projection)]))

    def _outcome(self, rtype: ResourceType, row: Row, projection: Projection | None) -> Outcome:
        """Rendered after the write block: rendering needs no transaction, and inside the block
        every write queued for the write lock would wait for it."""
        url = location(self.base_url, rtype.name, row.id)
        if projection is None:
            return Outcome(None, row.etag, url)
        return Outcome(self.present(rtype, [row], projection)[0], row.etag, url)

    def _checked_members(self, tx: Tx, group_id: str, members: Sequence[dict[str, Any]]) -> list[str]:
        """Member ids that exist, as Users or Groups; unknown ids are a 400, never silently dropped."""
        ids = list(dict.fromkeys(m["value"] for m in members))
        types = tx.member_types(ids)
        missing = [mid for mid in ids if mid not in types]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise errors.InvalidValue(f"members: no User or Group has the id {shown}.")
        nested = [mid for mid in ids if types[mid] == "Group"]
        if nested and tx.would_cycle(group_id, nested):
            raise errors.InvalidValue("members: a group cannot contain itself, directly or through nested groups.")
        return ids

    def _replace_members(self, tx: Tx, group_id: str, members: Sequence[dict[str, Any]]) -> int:
        wanted = self._checked_members(tx, group_id, members)
        current = set(tx.member_ids(group_id))
        return (tx.remove_members(group_id, sorted(current - set(wanted)))
                + tx.add_members(group_id, [mid for mid in wanted if mid not in current]))

    def _apply_member_changes(self, tx: Tx, group_id: str, changes: MemberChanges) -> int:
        count = 0
        if changes.replace is not None:
            count += self._replace_members(tx, group_id, [{"value": mid} for mid in changes.replace])
        if changes.remove:
            count += tx.remove_members(group_id, changes.remove)
        if changes.add:
            count += tx.add_members(group_id, self._checked_members(tx, group_id, [{"value": m} for m in changes.add]))
        return count


class TxMembers:
    """A group's membership as the PATCH engine sees it: probed per id, loaded whole only on demand."""

    def __init__(self, tx: Tx, group_id: str) -> None:
        self.tx = tx
        self.group_id = group_id

    def contains(self, ids: Sequence[str]) -> set[str]:
        return self.tx.has_members(self.group_id, ids)

    def all(self) -> list[MemberRef]:
        trace.note("leniency", text="loaded the whole member list to evaluate a members filter")
        group = self.tx.get(GROUP_TYPE, self.group_id, Related(edges=frozenset({GROUP_TYPE.name})))
        return group.edges if group is not None and group.edges is not None else []


def _as_new(rtype: ResourceType, row: Row, projection: Projection | None) -> Row | None:
    """What a read would return with a user just created without a manager, known without one:
    no groups (`groups` is readOnly, RFC 7643 §4.1.2: a user joins groups only by their writes)
    and no manager to name. None when only a read can tell (a group's members, a manager's name)."""
    if rtype is not USER_TYPE or projection is None or _manager_id(row.doc) is not None:
        return None
    edges: list[MemberRef] | None = [] if related_for([(rtype, projection)]).edges else None
    return row.with_related(edges, None)


def _manager_id(doc: dict[str, Any]) -> Any:
    manager = doc.get(ENTERPRISE_URN, {}).get("manager")
    return manager.get("value") if isinstance(manager, dict) else None


def _projection(rtype: ResourceType, query: Search) -> Projection:
    return parse_projection(rtype, query.attributes, query.excluded)


def related_for(projections: Sequence[tuple[ResourceType, Projection]]) -> Related:
    """What rows must be read with for these projections: edges only where `groups` or `members`
    is kept (`excludedAttributes=members` on a 100,000-member group costs nothing, E21)."""
    return _related_for(tuple((rtype.name, projection) for rtype, projection in projections))


@functools.lru_cache(maxsize=256)
def _related_for(projections: tuple[tuple[str, Projection], ...]) -> Related:
    """Cached by type name (hashing a ResourceType would hash its whole schema): every request
    asks, and clients repeat the same few projections."""
    edges: set[str] = set()
    manager = False
    for name, projection in projections:
        rtype = RESOURCE_TYPES[name.lower()]
        if keeps(rtype, projection, rtype.core.id, "members" if rtype is GROUP_TYPE else "groups"):
            edges.add(name)
        manager |= rtype is USER_TYPE and keeps(rtype, projection, ENTERPRISE_URN, "manager")
    return Related(frozenset(edges), manager)


def _with_defaults(rtype: ResourceType, draft: Draft) -> Draft:
    """A user created without `active` is active: SailPoint's create policy may omit it
    (idp-dialects S8) and Okta's SPEC test expects it on every user (O1)."""
    if rtype is USER_TYPE:
        draft.doc.setdefault("active", True)
    return draft


def _new_secret(password: str | None, stored: str | None) -> str | None:
    """The hash to store: unchanged when no password is given or the same one is sent again
    (Okta's password sync resends it), so the version moves only on a real change."""
    if not password:
        return stored
    if stored and passwords.verify_password(password, stored):
        return stored
    return passwords.hash_password(password)


def _check_immutable(rtype: ResourceType, current: dict[str, Any], draft: Draft) -> None:
    """An immutable attribute may be set once, never changed (RFC 7643 §2.2 `immutable`)."""
    for schema in rtype.schemas:
        for attr in schema.attributes:
            if attr.mutability != "immutable":
                continue
            holder_old = current if schema is rtype.core else current.get(schema.id, {})
            holder_new = draft.doc if schema is rtype.core else draft.doc.get(schema.id, {})
            if attr.name in holder_old and holder_new.get(attr.name) != holder_old[attr.name]:
                raise errors.Mutability(f"'{attr.name}' is immutable and cannot be changed.")


def _list_response(query: Search, page: Page, next_cursor: str | None, resources: list[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [LIST_RESPONSE_URN], "totalResults": page.total,
                            "itemsPerPage": len(resources)}
    if query.cursor is None:
        body["startIndex"] = query.start_index
    elif next_cursor:
        body["nextCursor"] = next_cursor
    body["Resources"] = resources
    return body


def _not_found(rtype: ResourceType, rid: str) -> errors.NotFound:
    return errors.NotFound(f"{rtype.name} {rid!r} not found.")
