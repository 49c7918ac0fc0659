"""value_keys holds the keys of every singular string attribute a document stores (migration 4),
so any comparison on them is a range of that index, never a parse of each JSON document (issue
#4): which attributes, the upgrade of a version-3 database, writes keeping the keys exact, the
plans of the page and COUNT queries, and answers identical to the reference evaluator."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from scimd import store as store_module
from scimd.filter import parse_filter
from scimd.schema import USER_TYPE, ResourceType, fold_case
from scimd.sql import find
from scimd.store import INDEXED_ATTRIBUTES, MIGRATIONS, Store
from tests.conftest import ScimClient, make_app, patch_body
from tests.test_query import load_dataset, reference_ids, sql_ids

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
STAMP = "2024-03-01T10:00:00.000000Z"

# -- which attributes ----------------------------------------------------------------------------

# (value_keys.attr, caseExact). Derived from scimd/schema.py; pinned here because a change needs a
# new migration that backfills the new attributes (old databases have no keys for them).
USER_INDEXED = [
    ("emails.value", False),
    ("name.formatted", False), ("name.familyName", False), ("name.givenName", False), ("name.middleName", False),
    ("name.honorificPrefix", False), ("name.honorificSuffix", False),
    ("displayName", False), ("nickName", False), ("profileUrl", False), ("title", False), ("userType", False),
    ("preferredLanguage", False), ("locale", False), ("timezone", False),
    ("EnterpriseUser:employeeNumber", False), ("EnterpriseUser:costCenter", False),
    ("EnterpriseUser:organization", False), ("EnterpriseUser:division", False),
    ("EnterpriseUser:department", False), ("EnterpriseUser:manager.value", True),
]


def test_indexed_attributes_are_the_stored_singular_strings_of_the_schema() -> None:
    """Not userName (name_key), password (returned: never), manager.displayName (readOnly, never
    stored), manager.$ref (rendered from the value), nor id/externalId/meta/schemas (columns or
    computed); a Group's only string attribute, displayName, is its name_key."""
    assert [(a.key, a.leaf.case_exact) for a in INDEXED_ATTRIBUTES["User"]] == USER_INDEXED
    assert INDEXED_ATTRIBUTES["Group"] == ()


# -- a version-3 database is upgraded with the keys backfilled -----------------------------------

V3_USERS: list[tuple[str, str, dict[str, Any]]] = [
    ("u-1", "bjensen", {
        "userName": "bjensen", "displayName": "Barbara",
        "name": {"familyName": "Ärger", "givenName": "Straße", "formatted": "Cafe\u0301 İstanbul"},
        "title": "",  # "" is never stored by today's writes, but an old document may hold it: `co ""` matches it
        "nickName": 5,  # not a string: never matches a string comparison, so no key
        "emails": [{"value": "Work@Example.COM", "type": "work"}],
        ENTERPRISE: {"department": "Tour Operations", "employeeNumber": "E1",
                     "manager": {"value": "AbC-1", "displayName": "Boss", "$ref": "https://x/Users/AbC-1"}}}),
    ("u-2", "carol", {"userName": "carol"}),
]
V3_GROUPS: list[tuple[str, str, dict[str, Any]]] = [("g-1", "Tour Guides", {"displayName": "Tour Guides"})]
V3_BACKFILLED = sorted([
    ("EnterpriseUser:department", "tour operations", "u-1"),
    ("EnterpriseUser:employeeNumber", "e1", "u-1"),
    ("EnterpriseUser:manager.value", "AbC-1", "u-1"),  # caseExact: verbatim
    ("displayName", "barbara", "u-1"),
    ("emails.value", "work@example.com", "u-1"),  # by migration 2
    ("name.familyName", "ärger", "u-1"),
    ("name.formatted", "café i\u0307stanbul", "u-1"),  # NFC, then full case folding (İ -> i + U+0307)
    ("name.givenName", "strasse", "u-1"),
    ("title", "", "u-1"),
])


def create_v3_database(path: Path) -> None:
    """A database as migration 3 left it: rows written at version 1, then migrations 2 and 3."""
    conn = store_module._connect(path)  # registers scim_fold, which migration 2 uses
    try:
        conn.execute("BEGIN")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        for rows, type_name in ((V3_USERS, "User"), (V3_GROUPS, "Group")):
            for rid, name, doc in rows:
                conn.execute("INSERT INTO resources VALUES (?, ?, ?, NULL, ?, ?, NULL, 2, ?, ?)",
                             (rid, type_name, fold_case(name), name, orjson.dumps(doc).decode(), STAMP, STAMP))
        for statement in (*MIGRATIONS[1], *MIGRATIONS[2]):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
        conn.execute("COMMIT")
    finally:
        conn.close()


def value_keys(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT attr, key, resource_id FROM value_keys"))
    finally:
        conn.close()


def written_keys(rtype: ResourceType, rid: str, doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The rows a write of this document would produce (Tx._index_values)."""
    return [(attr, key, rid) for attr, key in store_module.value_keys(rtype, doc)]


def test_version_3_database_is_upgraded_with_every_singular_string_backfilled(tmp_path: Path) -> None:
    path = tmp_path / "scim.db"
    create_v3_database(path)
    assert value_keys(path) == [("emails.value", "work@example.com", "u-1")]
    Store(path).close()
    assert value_keys(path) == V3_BACKFILLED
    # The SQL backfill (scim_fold) and the write path (fold_case in Python) agree key for key.
    assert V3_BACKFILLED == sorted(key for rid, _, doc in V3_USERS for key in written_keys(USER_TYPE, rid, doc))


@pytest.mark.parametrize(("text", "expected"), [
    ('title co ""', ["u-1"]),
    ('name.formatted co "CAFÉ İSTANBUL"', ["u-1"]),
    ('name.givenName eq "STRASSE"', ["u-1"]),
    ('nickName eq "5"', []),
    ('manager eq "abc-1"', []),
    ('manager eq "AbC-1"', ["u-1"]),
    ('department sw "TOUR"', ["u-1"]),
    ('not (title eq "")', ["u-2"]),
])
def test_an_upgraded_database_answers_from_its_keys_as_the_reference_does(tmp_path: Path, text: str,
                                                                          expected: list[str]) -> None:
    create_v3_database(tmp_path / "scim.db")
    store = Store(tmp_path / "scim.db")
    try:
        assert sql_ids(store, USER_TYPE, text) == expected == reference_ids(store, USER_TYPE, text)
    finally:
        store.close()


# -- writes keep the keys exact --------------------------------------------------------------------

USER_URL = "/scim/v2/Users"
# (method, body, the resource's value_keys rows after it as (attr, key))
WRITES: list[tuple[str, Any, list[tuple[str, str]]]] = [
    ("POST", {"userName": "w", "name": {"familyName": "Smith", "givenName": "Ann"}, "title": "Boss",
              "emails": [{"value": "A@X.org"}, {"value": "a@x.ORG"}, {"value": "b@y.com"}],
              ENTERPRISE: {"department": "R&D", "manager": {"value": "M-1"}}},
     [("EnterpriseUser:department", "r&d"), ("EnterpriseUser:manager.value", "M-1"), ("emails.value", "a@x.org"),
      ("emails.value", "b@y.com"), ("name.familyName", "smith"), ("name.givenName", "ann"), ("title", "boss")]),
    ("PUT", {"userName": "w", "name": {"familyName": "Jones"}, "nickName": "JJ"},
     [("name.familyName", "jones"), ("nickName", "jj")]),
    ("PATCH", patch_body({"op": "replace", "path": "name.familyName", "value": "Brown"}),
     [("name.familyName", "brown"), ("nickName", "jj")]),
    ("PATCH", patch_body({"op": "remove", "path": "name.familyName"}), [("nickName", "jj")]),
    ("PATCH", patch_body({"op": "add", "value": {"title": "Chef", f"{ENTERPRISE}:department": "Ops"}},
                         {"op": "replace", "path": "nickName", "value": ""}),
     [("EnterpriseUser:department", "ops"), ("title", "chef")]),
    ("DELETE", None, []),
]


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[ScimClient, Store]]:
    app, store = make_app(tmp_path)
    yield ScimClient(app), store
    store.close()


def resource_keys(store: Store, rid: str) -> list[tuple[str, str]]:
    return sorted(store.reader().execute("SELECT attr, key FROM value_keys WHERE resource_id = ?", (rid,)))


def test_every_write_keeps_the_keys_exact(app_client: tuple[ScimClient, Store]) -> None:
    client, store = app_client
    other = client.post(USER_URL, json={"userName": "other", "title": "Boss"}).json["id"]
    rid = ""
    for method, body, expected in WRITES:
        url = USER_URL if method == "POST" else f"{USER_URL}/{rid}"
        response = client.open(url, method=method, **({"json": body} if body is not None else {}))
        assert response.status_code in (200, 201, 204), response.get_data(as_text=True)
        rid = rid or response.json["id"]
        assert resource_keys(store, rid) == sorted(expected), method
        row = store.view().get(USER_TYPE, rid)
        if row is not None:
            assert resource_keys(store, rid) == sorted((a, k) for a, k, _ in written_keys(USER_TYPE, rid, row.doc))
    assert resource_keys(store, other) == [("title", "boss")]  # untouched by the writes of another


# -- answers and plans --------------------------------------------------------------------------

USERS: list[dict[str, Any]] = [
    {"id": "smith", "userName": "smith", "name": {"familyName": "Smith"}, "title": "Boss",
     ENTERPRISE: {"department": "Tour Operations", "manager": {"value": "AbC"}}},
    {"id": "nofamily", "userName": "nofamily", "title": "boss"},
    {"id": "strasse", "userName": "strasse", "name": {"familyName": "Straße"},
     "emails": [{"value": "A@x.org"}, {"value": "b@y.com"}]},
    {"id": "empty", "userName": "empty"},
]
ANSWERS = [
    ('name.familyName co "SMI"', ["smith"]),
    ('name.familyName eq "STRASSE"', ["strasse"]),  # full Unicode case folding
    ('name.familyName ne "Smith"', ["strasse"]),  # an absent attribute matches no comparison, ne included
    ('not (name.familyName eq "Smith")', ["empty", "nofamily", "strasse"]),
    ('name.familyName sw ""', ["smith", "strasse"]),
    ('title eq "BOSS"', ["nofamily", "smith"]),
    ('title gt "BOS" and title le "boss"', ["nofamily", "smith"]),
    ('title lt "b"', []),
    (f'{ENTERPRISE}:department sw "tour"', ["smith"]),
    ('department ew "OPERATIONS"', ["smith"]),
    ('manager eq "abc"', []),  # caseExact
    ('manager.value eq "AbC"', ["smith"]),
    ('manager co "b"', ["smith"]),
    ('emails co "A@X"', ["strasse"]),
    ('emails.value ew ".COM"', ["strasse"]),
    ('emails.value ne "a@x.org"', ["strasse"]),  # some value differs
    ('emails.value gt "z"', []),
    ('title eq null', ["empty", "strasse"]),
    ('name.familyName pr', ["smith", "strasse"]),
    ('title co "os" or emails.value sw "b@"', ["nofamily", "smith", "strasse"]),
]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("value_index") / "scim.db")
    load_dataset(store, {"User": USERS})
    yield store
    store.close()


@pytest.mark.parametrize(("text", "expected"), ANSWERS, ids=[text for text, _ in ANSWERS])
def test_answers_match_the_reference(small_store: Store, text: str, expected: list[str]) -> None:
    assert sql_ids(small_store, USER_TYPE, text) == sorted(expected) == reference_ids(small_store, USER_TYPE, text)


# Filters that must be driven by value_keys: the page query and the exact COUNT both probe the
# matching ids (SQLite plans without statistics, so a small database plans like a big one).
PLANNED: list[tuple[ResourceType, str]] = [
    (USER_TYPE, 'name.familyName co "x"'),
    (USER_TYPE, 'title eq "Boss"'),
    (USER_TYPE, f'{ENTERPRISE}:department sw "Tour"'),
    (USER_TYPE, 'name.givenName ew "n" and active eq true'),
    (USER_TYPE, 'emails.value co "example"'),
    (USER_TYPE, 'emails gt "b"'),
    (USER_TYPE, 'manager eq "AbC"'),
    (USER_TYPE, 'title ne "Boss"'),
]


def planned_statements(store: Store, rtype: ResourceType, text: str) -> list[str]:
    """The SELECTs find() runs for a second page (so the COUNT runs too), with their plans."""
    conn = store.reader()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        with store.read():
            find(conn, [rtype], parse_filter(text), None, False, 1, 1)
    finally:
        conn.set_trace_callback(None)
    selects = [sql for sql in statements if sql.startswith("SELECT")]
    return [" | ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)) for sql in selects]


@pytest.mark.parametrize(("rtype", "text"), PLANNED, ids=[text for _, text in PLANNED])
def test_page_and_count_probe_the_ids_value_keys_finds(small_store: Store, rtype: ResourceType, text: str) -> None:
    plans = planned_statements(small_store, rtype, text)
    assert len(plans) == 2, plans  # the page and the COUNT
    for plan in plans:
        assert "SEARCH value_keys USING PRIMARY KEY (attr=?" in plan, plan
        assert "SEARCH r USING INDEX sqlite_autoindex_resources_1 (id=?)" in plan, plan
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan
