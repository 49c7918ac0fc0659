"""Users and Groups over HTTP (RFC 7644 §3.3-§3.6, §3.14; RFC 7643 §2-§4): create, read, replace,
delete and list; schema-driven validation with the leniencies real IdPs need; uniqueness decided
by the database, also under racing requests; meta and ETags; group membership, nested groups and
the cascade when a member goes away; and the RFC 7643 §8 examples as data files.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import ScimClient, assert_scim_error, make_app, patch_body

BASE = "https://scim.example.com:8443"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
RFC_DATA = Path(__file__).parent / "data" / "rfc7643"
RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")
WEAK_ETAG = re.compile(r'W/"[^"]+"')
ENDPOINTS = {"User": "/scim/v2/Users", "Group": "/scim/v2/Groups"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    app, store = make_app(tmp_path, SHOWCASE_BASE_URL=BASE)
    yield app
    store.close()


@pytest.fixture
def client(app: Any) -> ScimClient:
    """Overrides the shared fixture: every absolute URL must come from SHOWCASE_BASE_URL."""
    return ScimClient(app)


def create(client: ScimClient, rtype: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(ENDPOINTS[rtype], json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


def user(client: ScimClient, user_name: str, **attributes: Any) -> dict[str, Any]:
    return create(client, "User", {"schemas": [USER_URN], "userName": user_name, **attributes})


def group(client: ScimClient, name: str, *member_ids: str) -> dict[str, Any]:
    return create(client, "Group", {"schemas": [GROUP_URN], "displayName": name,
                                    "members": [{"value": mid} for mid in member_ids]})


def minimal(rtype: str, name: str) -> dict[str, Any]:
    return {"userName": name} if rtype == "User" else {"displayName": name}


def url(resource: dict[str, Any]) -> str:
    return f"{ENDPOINTS[resource['meta']['resourceType']]}/{resource['id']}"


def get(client: ScimClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.get(url(resource))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def member_ids(resource: dict[str, Any]) -> list[str]:
    return sorted(m["value"] for m in resource.get("members") or [])


def group_ids(resource: dict[str, Any]) -> list[str]:
    return sorted(g["value"] for g in resource.get("groups") or [])


# -- create and read ---------------------------------------------------------------------------


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_ids_sort_in_creation_order_with_a_random_tail(client: ScimClient, rtype: str) -> None:
    """UUIDv7 ids (RFC 9562 §5.7) keep what is created together together in the indexes."""
    ids = []
    for n in range(3):
        ids.append(client.post(ENDPOINTS[rtype], json=minimal(rtype, f"ordered{n}")).json["id"])
        time.sleep(0.002)  # the next one in a later millisecond: within one, the order is random
    assert ids == sorted(ids)
    assert abs((uuid.UUID(ids[0]).int >> 80) - time.time() * 1000) < 60_000  # its 48-bit timestamp
    assert len({rid[15:] for rid in ids}) == 3  # past the timestamp: random


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_create_answers_201_with_location_etag_and_meta(client: ScimClient, rtype: str) -> None:
    response = client.post(ENDPOINTS[rtype], json=minimal(rtype, "first"))
    assert response.status_code == 201
    body = response.json
    assert uuid.UUID(body["id"]).version == 7  # time-ordered (scimd/ids.py)
    meta = body["meta"]
    assert meta["resourceType"] == rtype
    assert meta["location"] == f"{BASE}{ENDPOINTS[rtype]}/{body['id']}" == response.headers["Location"]
    assert WEAK_ETAG.fullmatch(meta["version"]) and response.headers["ETag"] == meta["version"]
    assert RFC3339_UTC.fullmatch(meta["created"]) and meta["created"] == meta["lastModified"]
    assert body["schemas"] == [USER_URN if rtype == "User" else GROUP_URN]


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_get_returns_the_created_resource_with_its_etag(client: ScimClient, rtype: str) -> None:
    created = client.post(ENDPOINTS[rtype], json=minimal(rtype, "x"))
    fetched = client.get(url(created.json))
    assert fetched.status_code == 200
    assert fetched.json == created.json
    assert fetched.headers["ETag"] == created.headers["ETag"]
    assert "Location" not in fetched.headers


def test_ids_are_server_assigned_and_client_meta_is_ignored(client: ScimClient) -> None:
    sent_id = "2819c223-7f76-453a-919d-413861904646"
    first = user(client, "a", id=sent_id, meta={"resourceType": "Group", "created": "2000-01-01T00:00:00Z",
                                                "version": 'W/"99"', "location": "https://evil.example/Users/x"})
    second = user(client, "b")
    assert first["id"] != sent_id and first["id"] != second["id"]
    assert first["meta"]["resourceType"] == "User"
    assert first["meta"]["created"] != "2000-01-01T00:00:00Z" and first["meta"]["version"] != 'W/"99"'
    assert first["meta"]["location"] == f"{BASE}/scim/v2/Users/{first['id']}"
    assert_scim_error(client.get(f"/scim/v2/Users/{sent_id}"), 404)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("rtype", ["User", "Group"])
@pytest.mark.parametrize("rid", ["2819c223-7f76-453a-919d-413861904646", "not-a-uuid", "%20"],
                         ids=["unknown-uuid", "malformed", "blank"])
def test_unknown_id_is_404(client: ScimClient, method: str, rtype: str, rid: str) -> None:
    body = {"GET": None, "DELETE": None, "PUT": minimal(rtype, "x"),
            "PATCH": patch_body({"op": "replace", "path": "externalId", "value": "e"})}[method]
    response = client.open(f"{ENDPOINTS[rtype]}/{rid}", method=method, **({"json": body} if body else {}))
    assert_scim_error(response, 404)


def test_user_of_the_wrong_type_is_404(client: ScimClient) -> None:
    someone = user(client, "someone")
    assert_scim_error(client.get(f"/scim/v2/Groups/{someone['id']}"), 404)


# -- validation driven by the schema -----------------------------------------------------------


@pytest.mark.parametrize(("rtype", "body"), [
    ("User", {}),
    ("User", {"userName": None}),
    ("User", {"userName": ""}),
    ("User", {"displayName": "no user name"}),
    ("User", {"USERNAME": None, "name": {"givenName": "A"}}),
    ("Group", {}),
    ("Group", {"displayName": None}),
    ("Group", {"displayName": ""}),
    ("Group", {"externalId": "no display name"}),
], ids=["user-empty", "user-null", "user-blank", "user-other-attrs", "user-null-any-case",
        "group-empty", "group-null", "group-blank", "group-other-attrs"])
def test_missing_required_attribute_is_400_invalid_value(client: ScimClient, rtype: str, body: dict[str, Any]) -> None:
    assert_scim_error(client.post(ENDPOINTS[rtype], json=body), 400, "invalidValue")
    existing = create(client, rtype, minimal(rtype, "existing"))
    assert_scim_error(client.put(url(existing), json=body), 400, "invalidValue")
    assert get(client, existing)["meta"]["version"] == existing["meta"]["version"]


WRONG_TYPES = [
    ("User", "userName", 42),
    ("User", "userName", True),
    ("User", "userName", ["bjensen"]),
    ("User", "userName", {"value": "bjensen"}),
    ("User", "displayName", 3.5),
    ("User", "timezone", False),
    ("User", "active", "yes"),
    ("User", "active", 1),
    ("User", "active", {"value": True}),
    ("User", "name", "Barbara Jensen"),
    ("User", "name", 5),
    ("User", "name", {"givenName": 5}),
    ("User", "emails", 5),
    ("User", "emails", [{"value": ["a@example.com"]}]),
    ("User", "emails", [{"value": "a@example.com", "primary": "maybe"}]),
    ("User", "emails", [[{"value": "a@example.com"}]]),
    ("User", "x509Certificates", [{"value": "a"}]),
    ("User", ENTERPRISE, "Tour Operations"),
    ("User", ENTERPRISE, {"employeeNumber": 701984}),
    ("User", ENTERPRISE, {"manager": {"value": 5}}),
    ("Group", "displayName", 5),
    ("Group", "displayName", ["Tour Guides"]),
    ("Group", "members", 5),
    ("Group", "members", [{"display": "no value"}]),
    ("Group", "members", [{"value": 5}]),
    ("Group", "members", [7]),
]


@pytest.mark.parametrize(("rtype", "attribute", "value"), WRONG_TYPES,
                         ids=[f"{t}.{a.rsplit(':', 1)[-1]}={json.dumps(v)}" for t, a, v in WRONG_TYPES])
def test_wrong_type_is_400_invalid_value(client: ScimClient, rtype: str, attribute: str, value: Any) -> None:
    body = {**minimal(rtype, "typed"), attribute: value}
    assert_scim_error(client.post(ENDPOINTS[rtype], json=body), 400, "invalidValue")
    existing = create(client, rtype, minimal(rtype, "existing"))
    assert_scim_error(client.put(url(existing), json={**minimal(rtype, "existing"), attribute: value}), 400,
                      "invalidValue")
    assert client.get(f"{ENDPOINTS[rtype]}?count=10").json["totalResults"] == 1


@pytest.mark.parametrize("body", [[{"userName": "a"}], "bjensen", 42, None], ids=["array", "string", "number", "null"])
def test_body_that_is_not_an_object_is_400_invalid_syntax(client: ScimClient, body: Any) -> None:
    assert_scim_error(client.post("/scim/v2/Users", json=body), 400, "invalidSyntax")


def test_attribute_names_are_case_insensitive_in_and_canonical_out(client: ScimClient) -> None:
    body = {
        "SCHEMAS": [USER_URN.upper()],
        "USERNAME": "Mixed.Case",
        "externalid": "X-1",
        "Name": {"GIVENNAME": "Barbara", "familyname": "Jensen"},
        "EMAILS": [{"VALUE": "babs@example.com", "Type": "work", "PRIMARY": True}],
        "Active": True,
        "urn:ietf:params:scim:schemas:core:2.0:user:DISPLAYNAME": "Babs",
        ENTERPRISE.lower(): {"DEPARTMENT": "Tour Operations", "Manager": {"VALUE": "boss-id"}},
    }
    created = create(client, "User", body)
    expected = {
        "userName": "Mixed.Case", "externalId": "X-1", "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"value": "babs@example.com", "type": "work", "primary": True}], "active": True,
        "displayName": "Babs", ENTERPRISE: {"department": "Tour Operations", "manager": {"value": "boss-id"}},
    }
    for resource in (created, get(client, created)):
        assert {k: v for k, v in resource.items() if k in expected} == expected
        assert set(resource) == {*expected, "schemas", "id", "meta", "groups"}
        assert resource["schemas"] == [USER_URN, ENTERPRISE]


@pytest.mark.parametrize(("sent", "stored"), [
    ("True", True), ("False", False), ("true", True), ("FALSE", False), (" false ", False), (True, True),
    (False, False),
], ids=["True", "False", "true", "FALSE", "padded", "json-true", "json-false"])
def test_boolean_strings_are_accepted(client: ScimClient, sent: Any, stored: bool) -> None:
    created = user(client, "flag", active=sent, emails=[{"value": "a@example.com", "primary": sent}])
    replaced = client.put(url(created), json={"userName": "flag", "active": sent}).json
    assert get(client, created)["active"] is stored is replaced["active"]
    assert created["emails"][0]["primary"] is stored


# RFC 7643 §2.5: null, and [] for a multi-valued attribute, are "unassigned"; "" too for strings
# (idp-dialects E16, OL1).
UNSET = [(attr, None) for attr in ("title", "externalId", "name", "emails", "addresses", ENTERPRISE)] + [
    ("emails", []), ("addresses", []), ("title", ""), ("externalId", ""), ("displayName", ""),
    ("emails", [{"value": ""}])]


@pytest.mark.parametrize(("attribute", "unset"), UNSET,
                         ids=[f"{a.rsplit(':', 1)[-1]}={json.dumps(v)}" for a, v in UNSET])
def test_null_empty_array_and_empty_string_mean_unset(client: ScimClient, attribute: str, unset: Any) -> None:
    created = user(client, "unset", **{attribute: unset})
    assert attribute not in get(client, created)
    full = user(client, "full", title="Boss", externalId="e", displayName="D", name={"givenName": "A"},
                emails=[{"value": "f@example.com"}], addresses=[{"locality": "Paris"}],
                **{ENTERPRISE: {"division": "D"}})
    replaced = client.put(url(full), json={**writable_user(client, full), attribute: unset})
    assert replaced.status_code == 200
    fetched = get(client, full)
    assert attribute not in fetched
    assert fetched["schemas"] == [USER_URN] + ([] if attribute == ENTERPRISE else [ENTERPRISE])
    assert len(writable_user(client, fetched)) == len(writable_user(client, full)) - 1


def test_null_inside_complex_and_multi_valued_attributes_is_dropped(client: ScimClient) -> None:
    created = user(client, "nested", name={"givenName": "A", "familyName": None},
                   emails=[{"value": "a@example.com", "type": None}, None, {}], phoneNumbers=[{"value": None}])
    fetched = get(client, created)
    assert fetched["name"] == {"givenName": "A"}
    assert fetched["emails"] == [{"value": "a@example.com"}]
    assert "phoneNumbers" not in fetched


@pytest.mark.parametrize(("rtype", "schemas"), [
    ("Group", [GROUP_URN, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"]),
    ("User", ["urn:scim:schemas:core:1.0"]),
    ("User", ["urn:scim:schemas:core:2.0", "urn:scim:schemas:extension:enterprise:2.0"]),
    ("User", [USER_URN, "urn:example:params:scim:schemas:extension:acme:2.0:User"]),
    ("Group", []),
], ids=["entra-adscim-group", "onelogin-core-1.0", "onelogin-v2-legacy", "custom-extension", "empty"])
def test_unknown_schema_uris_are_accepted(client: ScimClient, rtype: str, schemas: list[str]) -> None:
    body = {"schemas": schemas, **minimal(rtype, "lenient"), "externalId": "8aa1", "meta": {"resourceType": rtype}}
    created = create(client, rtype, body)
    assert created["schemas"] == [USER_URN if rtype == "User" else GROUP_URN]
    assert get(client, created)["externalId"] == "8aa1"


@pytest.mark.parametrize("legacy", ["urn:scim:schemas:extension:enterprise:2.0",
                                    "urn:scim:schemas:extension:enterprise:1.0",
                                    "URN:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0"])
def test_onelogin_legacy_enterprise_urn_is_read_as_the_enterprise_extension(client: ScimClient, legacy: str) -> None:
    created = user(client, "onelogin-test-user01", schemas=["urn:scim:schemas:core:2.0", legacy],
                   **{legacy: {"department": "Tour Operations", "employeeNumber": "7"}})
    fetched = get(client, created)
    assert fetched[ENTERPRISE] == {"department": "Tour Operations", "employeeNumber": "7"}
    assert fetched["schemas"] == [USER_URN, ENTERPRISE]
    assert legacy not in fetched


def test_unknown_attributes_are_ignored_and_not_stored(client: ScimClient) -> None:
    created = user(client, "junk", favouriteColour="blue", prefferedLanguage="en",
                   name={"givenName": "A", "nickname": "not a sub-attribute"},
                   addresses=[{"locality": "Paris", "city": "Paris"}],
                   emails=[{"value": "a@example.com", "verified": True}],
                   **{"urn:example:params:scim:schemas:extension:acme:2.0:User": {"badge": 7},
                      "urn:example:params:scim:schemas:extension:acme:2.0:User:badge": 7,
                      ENTERPRISE: {"department": "Ops", "costCentre": "typo"}})
    fetched = get(client, created)
    # `active` may be set by default on create (idp-dialects S8); nothing else may appear.
    assert set(fetched) - {"active"} == {"schemas", "id", "userName", "name", "addresses", "emails", ENTERPRISE,
                                         "groups", "meta"}
    assert fetched["name"] == {"givenName": "A"}
    assert fetched["addresses"] == [{"locality": "Paris"}]
    assert fetched["emails"] == [{"value": "a@example.com"}]
    assert fetched[ENTERPRISE] == {"department": "Ops"}
    listed = client.get('/scim/v2/Users?filter=userName eq "junk"').json["Resources"]
    assert "favouriteColour" not in json.dumps(listed) and "badge" not in json.dumps(listed)


@pytest.mark.parametrize(("attribute", "value"), [
    ("emails", [{"value": "a@example.com", "type": "custom-label"}]),
    ("phoneNumbers", [{"value": "+1 555", "type": "satellite"}]),
    ("addresses", [{"locality": "Paris", "type": "holiday"}]),
    ("ims", [{"value": "handle", "type": "matrix"}]),
    ("photos", [{"value": "https://photos.example.com/p", "type": "avatar"}]),
], ids=["emails", "phoneNumbers", "addresses", "ims", "photos"])
def test_canonical_values_are_not_enforced(client: ScimClient, attribute: str, value: list[dict[str, Any]]) -> None:
    created = user(client, "canonical", **{attribute: value})
    assert get(client, created)[attribute] == value


def test_read_only_attributes_sent_by_the_client_are_ignored(client: ScimClient) -> None:
    created = user(client, "ro", groups=[{"value": "e9e30dba-f08f-4109-8486-d5c6a331660a", "display": "Tour Guides"}])
    assert created["groups"] == []
    # Okta's read-modify-write PUT (idp-dialects O15) sends back what GET gave, readOnly parts altered here.
    put = client.put(url(created), json={**created, "id": "someone-else", "meta": {"version": 'W/"42"'},
                                         "groups": [{"value": "x"}]})
    assert put.status_code == 200
    assert put.json["id"] == created["id"] and put.json["groups"] == []
    assert put.json["meta"]["version"] == created["meta"]["version"]
    assert_scim_error(client.get("/scim/v2/Users/someone-else"), 404)


def test_immutable_member_sub_attributes_are_not_part_of_a_put_check(client: ScimClient) -> None:
    """members.value/$ref/type are immutable per element; a PUT replaces the member set as a whole."""
    a, b = user(client, "a"), user(client, "b")
    tour = group(client, "Tour", a["id"])
    replaced = client.put(url(tour), json={"displayName": "Tour", "members": [{"value": b["id"], "type": "User"}]})
    assert replaced.status_code == 200
    assert member_ids(replaced.json) == [b["id"]]


# -- PUT replaces --------------------------------------------------------------------------------


def test_put_replaces_every_writable_attribute(client: ScimClient) -> None:
    created = user(client, "full", externalId="e-1", title="Boss", active=False, name={"givenName": "A"},
                   emails=[{"value": "a@example.com"}], **{ENTERPRISE: {"department": "Ops"}})
    response = client.put(url(created), json={"userName": "full", "displayName": "Only Me"})
    assert response.status_code == 200
    for resource in (response.json, get(client, created)):
        # `active` was not asserted, so it keeps its value: a PUT never re-enables a user by omission.
        assert set(resource) == {"schemas", "id", "userName", "displayName", "active", "groups", "meta"}
        assert resource["active"] is False
        assert resource["schemas"] == [USER_URN]
        assert resource["meta"]["created"] == created["meta"]["created"]
        assert resource["meta"]["lastModified"] > created["meta"]["lastModified"]
        assert resource["meta"]["version"] != created["meta"]["version"]
    assert response.headers["ETag"] == response.json["meta"]["version"]


def test_put_on_a_group_replaces_its_members(client: ScimClient) -> None:
    a, b = user(client, "a"), user(client, "b")
    team = group(client, "Team", a["id"], b["id"])
    kept = client.put(url(team), json={"displayName": "Team", "members": [{"value": b["id"]}]}).json
    assert member_ids(kept) == [b["id"]]
    emptied = client.put(url(team), json={"displayName": "Renamed"}).json
    assert emptied["members"] == [] and emptied["displayName"] == "Renamed"
    assert group_ids(get(client, a)) == group_ids(get(client, b)) == []


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_put_of_what_get_returned_keeps_the_version(client: ScimClient, rtype: str) -> None:
    member = user(client, "member")
    extra = {"name": {"givenName": "A"}} if rtype == "User" else {"members": [{"value": member["id"]}]}
    created = create(client, rtype, {**minimal(rtype, "same"), "externalId": "e", **extra})
    response = client.put(url(created), json=get(client, created))
    assert response.status_code == 200
    assert response.headers["ETag"] == created["meta"]["version"]
    assert response.json["meta"]["lastModified"] == created["meta"]["lastModified"]


# -- password ------------------------------------------------------------------------------------


PASSWORD = "t1meMa$heen-unique-7f3a"


def query_db(tmp_path: Path, sql: str, *params: Any) -> Any:
    """One row straight from the database file, behind the server's back."""
    conn = sqlite3.connect(tmp_path / "scim.db")
    try:
        return conn.execute(sql, params).fetchone()
    finally:
        conn.close()


def stored_secret(tmp_path: Path, rid: str) -> tuple[str | None, str]:
    secret, doc = query_db(tmp_path, "SELECT secret, doc FROM resources WHERE id = ?", rid)
    return secret, doc


def test_password_is_stored_hashed_and_never_in_clear(client: ScimClient, tmp_path: Path) -> None:
    created = user(client, "pw", password=PASSWORD)
    secret, doc = stored_secret(tmp_path, created["id"])
    assert secret is not None and secret.startswith("scrypt$") and PASSWORD not in secret
    assert "password" not in json.loads(doc) and PASSWORD not in doc
    on_disk = b"".join(path.read_bytes() for path in tmp_path.glob("scim.db*"))
    assert PASSWORD.encode() not in on_disk


@pytest.mark.parametrize(("method", "path_suffix", "body"), [
    ("POST", "", {"userName": "other", "password": PASSWORD}),
    ("GET", "/{id}", None),
    ("GET", "/{id}?attributes=password", None),
    ("GET", "/{id}?attributes=password,userName", None),
    ("GET", "?filter=userName eq \"pw\"", None),
    ("GET", "?attributes=password", None),
    ("PUT", "/{id}", {"userName": "pw", "password": PASSWORD + "-new"}),
    ("PATCH", "/{id}", patch_body({"op": "replace", "path": "password", "value": PASSWORD + "-patched"})),
    ("POST", "/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                          "attributes": ["password", "userName"]}),
], ids=["post", "get", "get-attributes", "get-attributes-and-more", "list-filter", "list-attributes", "put", "patch",
        "search"])
def test_password_is_never_returned(client: ScimClient, method: str, path_suffix: str, body: Any) -> None:
    created = user(client, "pw", password=PASSWORD)
    response = client.open("/scim/v2/Users" + path_suffix.format(id=created["id"]), method=method,
                           **({"json": body} if body is not None else {}))
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    assert "password" not in response.get_data(as_text=True).lower()
    assert PASSWORD not in response.get_data(as_text=True)


def test_password_changes_move_the_version_and_a_put_without_one_keeps_it(client: ScimClient, tmp_path: Path) -> None:
    created = user(client, "pw", password=PASSWORD)
    first, _ = stored_secret(tmp_path, created["id"])
    kept = client.put(url(created), json=created)  # what the client read back: no password in it
    assert kept.headers["ETag"] == created["meta"]["version"]
    assert stored_secret(tmp_path, created["id"])[0] == first
    changed = client.put(url(created), json={"userName": "pw", "password": "another-one"})
    second, _ = stored_secret(tmp_path, created["id"])
    assert second != first and second is not None and second.startswith("scrypt$")
    assert changed.headers["ETag"] != created["meta"]["version"]


# -- uniqueness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("rtype", "first", "second"), [
    ("User", "bjensen@example.com", "bjensen@example.com"),
    ("User", "bjensen@example.com", "BJensen@Example.COM"),
    ("User", "Ärger@example.com", "äRGER@example.com"),
    ("User", "ΣΊΣΥΦΟΣ", "σίσυφος"),
    ("Group", "Tour Guides", "Tour Guides"),
    ("Group", "Tour Guides", "TOUR GUIDES"),
    ("Group", "Équipe", "équipe"),
], ids=["user-same", "user-ascii-case", "user-umlaut", "user-greek-final-sigma", "group-same", "group-ascii-case",
        "group-accent-case"])
def test_name_uniqueness_is_case_insensitive(client: ScimClient, rtype: str, first: str, second: str) -> None:
    original = create(client, rtype, minimal(rtype, first))
    body = assert_scim_error(client.post(ENDPOINTS[rtype], json=minimal(rtype, second)), 409, "uniqueness")
    assert body["status"] == "409"
    other = create(client, rtype, minimal(rtype, "someone else"))
    assert_scim_error(client.put(url(other), json=minimal(rtype, second)), 409, "uniqueness")
    assert get(client, other)["meta"]["version"] == other["meta"]["version"]
    listed = client.get(f"{ENDPOINTS[rtype]}?count=10").json
    assert listed["totalResults"] == 2 and original["id"] in {r["id"] for r in listed["Resources"]}


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_renaming_to_a_different_case_of_the_own_name_is_allowed(client: ScimClient, rtype: str) -> None:
    created = create(client, rtype, minimal(rtype, "name"))
    response = client.put(url(created), json=minimal(rtype, "NAME"))
    assert response.status_code == 200
    attribute = "userName" if rtype == "User" else "displayName"
    assert get(client, created)[attribute] == "NAME"


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_a_deleted_name_can_be_used_again(client: ScimClient, rtype: str) -> None:
    created = create(client, rtype, minimal(rtype, "reused"))
    assert client.delete(url(created)).status_code == 204
    assert create(client, rtype, minimal(rtype, "REUSED"))["id"] != created["id"]


def test_user_and_group_names_do_not_collide(client: ScimClient) -> None:
    user(client, "shared")
    group(client, "shared")


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_racing_creates_of_one_name_give_exactly_one_201(app: Any, rtype: str) -> None:
    racers = 16
    barrier = threading.Barrier(racers)

    def race(index: int) -> tuple[int, Any]:
        client = ScimClient(app)  # one client per thread
        name = "racer@example.com" if index % 2 else "RACER@example.com"
        barrier.wait()
        response = client.post(ENDPOINTS[rtype], json=minimal(rtype, name))
        return response.status_code, response.json

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(race, range(racers)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * (racers - 1)
    assert all(body["scimType"] == "uniqueness" for status, body in results if status == 409)
    assert ScimClient(app).get(ENDPOINTS[rtype]).json["totalResults"] == 1


def test_external_id_is_case_exact_and_not_unique(client: ScimClient) -> None:
    lower, upper = user(client, "lower", externalId="abc-1"), user(client, "upper", externalId="ABC-1")
    for value, owner in (("ABC-1", upper), ("abc-1", lower)):
        assert get(client, owner)["externalId"] == value
        found = client.get(f'/scim/v2/Users?filter=externalId eq "{value}"').json["Resources"]
        assert [r["id"] for r in found] == [owner["id"]]


# -- meta and ETags ------------------------------------------------------------------------------


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_every_real_modification_moves_version_and_last_modified(client: ScimClient, rtype: str) -> None:
    created = create(client, rtype, minimal(rtype, "v"))
    seen = {created["meta"]["version"]}
    last = created["meta"]
    changes = [("PUT", {**minimal(rtype, "v"), "externalId": "one"}),
               ("PATCH", patch_body({"op": "replace", "path": "externalId", "value": "two"})),
               ("PATCH", patch_body({"op": "remove", "path": "externalId"}))]
    for method, body in changes:
        response = client.open(url(created), method=method, json=body)
        assert response.status_code in (200, 204)
        meta = get(client, created)["meta"]
        assert response.headers["ETag"] == meta["version"] and meta["version"] not in seen
        assert meta["lastModified"] > last["lastModified"] and meta["created"] == created["meta"]["created"]
        assert RFC3339_UTC.fullmatch(meta["lastModified"])
        seen.add(meta["version"])
        last = meta


def test_membership_changes_move_the_group_version(client: ScimClient) -> None:
    a = user(client, "a")
    team = group(client, "Team")
    added = client.patch(url(team), json=patch_body({"op": "add", "path": "members", "value": [{"value": a["id"]}]}))
    assert added.status_code == 204 and added.headers["ETag"] != team["meta"]["version"]
    again = client.patch(url(team), json=patch_body({"op": "add", "path": "members", "value": [{"value": a["id"]}]}))
    assert again.headers["ETag"] == added.headers["ETag"]  # nothing changed, so nothing moves


@pytest.mark.parametrize("rtype", ["User", "Group"])
@pytest.mark.parametrize(("if_match", "status"), [
    ('W/"{v}"', 200), ('"{v}"', 200), ("*", 200), ('W/"999", W/"{v}"', 200),
    ('W/"999"', 412), ('"999"', 412), ('W/"{v}0"', 412),
], ids=["weak", "strong-form", "star", "list", "stale", "stale-strong", "prefix"])
def test_if_match_on_put(client: ScimClient, rtype: str, if_match: str, status: int) -> None:
    created = create(client, rtype, minimal(rtype, "guarded"))
    current = created["meta"]["version"][3:-1]
    response = client.put(url(created), json={**minimal(rtype, "guarded"), "externalId": "changed"},
                          headers={"If-Match": if_match.format(v=current)})
    if status == 412:
        assert_scim_error(response, 412, "invalidVers")
        assert "externalId" not in get(client, created)
    else:
        assert response.status_code == 200 and get(client, created)["externalId"] == "changed"


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_if_match_on_delete_and_patch(client: ScimClient, rtype: str) -> None:
    created = create(client, rtype, minimal(rtype, "guarded"))
    client.put(url(created), json={**minimal(rtype, "guarded"), "externalId": "moved"})
    stale = {"If-Match": created["meta"]["version"]}
    assert_scim_error(client.delete(url(created), headers=stale), 412, "invalidVers")
    assert_scim_error(client.patch(url(created), json=patch_body({"op": "remove", "path": "externalId"}),
                                   headers=stale), 412, "invalidVers")
    current = get(client, created)
    assert current["externalId"] == "moved"
    assert client.delete(url(created), headers={"If-Match": current["meta"]["version"]}).status_code == 204


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_head_answers_the_headers_of_get_without_the_body(client: ScimClient, rtype: str) -> None:
    """RFC 9110 §9.3.2: HEAD is GET without content; the length is the one GET would send."""
    created = create(client, rtype, minimal(rtype, "headed"))
    full = client.get(url(created))
    head = client.head(url(created))
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Length"] == str(len(full.get_data()))
    assert head.headers["ETag"] == full.headers["ETag"] == created["meta"]["version"]
    assert head.headers["Content-Type"] == full.headers["Content-Type"]


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_if_none_match_on_get(client: ScimClient, rtype: str) -> None:
    created = create(client, rtype, minimal(rtype, "cached"))
    etag = created["meta"]["version"]
    for tag in (etag, "*", f'W/"999", {etag}'):
        not_modified = client.get(url(created), headers={"If-None-Match": tag})
        assert not_modified.status_code == 304 and not_modified.get_data() == b""
        assert not_modified.headers["ETag"] == etag
    client.put(url(created), json={**minimal(rtype, "cached"), "externalId": "new"})
    modified = client.get(url(created), headers={"If-None-Match": etag})
    assert modified.status_code == 200 and modified.json["externalId"] == "new"
    assert modified.headers["ETag"] != etag


# -- delete and list -----------------------------------------------------------------------------


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_delete_is_204_then_404(client: ScimClient, rtype: str) -> None:
    created = create(client, rtype, minimal(rtype, "gone"))
    response = client.delete(url(created))
    assert response.status_code == 204 and response.get_data() == b""
    assert_scim_error(client.get(url(created)), 404)
    assert_scim_error(client.delete(url(created)), 404)
    assert client.get(ENDPOINTS[rtype]).json["totalResults"] == 0


@pytest.mark.parametrize("rtype", ["User", "Group"])
def test_list_pages_through_every_resource_once(client: ScimClient, rtype: str) -> None:
    ids = {create(client, rtype, minimal(rtype, f"r{i}"))["id"] for i in range(5)}
    seen: list[str] = []
    for start in (1, 3, 5):
        page = client.get(f"{ENDPOINTS[rtype]}?startIndex={start}&count=2").json
        assert page["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
        assert (page["totalResults"], page["startIndex"]) == (5, start)
        assert page["itemsPerPage"] == len(page["Resources"]) == min(2, 6 - start)
        seen += [r["id"] for r in page["Resources"]]
    assert sorted(seen) == sorted(ids)
    listed = client.get(ENDPOINTS[rtype]).json["Resources"]
    assert all(r == get(client, r) for r in listed)


def test_inactive_users_are_returned_like_the_others(client: ScimClient) -> None:
    inactive = user(client, "sleeper", active=False)
    user(client, "awake", active=True)
    assert get(client, inactive)["active"] is False
    listed = {r["userName"]: r["active"] for r in client.get("/scim/v2/Users").json["Resources"]}
    assert listed == {"sleeper": False, "awake": True}
    found = client.get("/scim/v2/Users?filter=active eq false").json["Resources"]
    assert [r["id"] for r in found] == [inactive["id"]]


# -- Enterprise extension ------------------------------------------------------------------------


ENTERPRISE_DATA = {"employeeNumber": "701984", "costCenter": "4130", "organization": "Universal Studios",
                   "division": "Theme Park", "department": "Tour Operations",
                   "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d",
                               "$ref": "../Users/26118915-6090-4610-87e4-49d8ca9f808d"}}


def test_enterprise_extension_round_trips_every_attribute(client: ScimClient) -> None:
    created = user(client, "bjensen", schemas=[USER_URN, ENTERPRISE], **{ENTERPRISE: ENTERPRISE_DATA})
    assert get(client, created)[ENTERPRISE] == ENTERPRISE_DATA
    found = client.get(f'/scim/v2/Users?filter={ENTERPRISE}:department eq "Tour Operations"').json
    assert [r["id"] for r in found["Resources"]] == [created["id"]]


def test_schemas_lists_the_extension_exactly_when_it_has_data(client: ScimClient) -> None:
    declared_only = user(client, "declared", schemas=[USER_URN, ENTERPRISE])
    assert get(client, declared_only)["schemas"] == [USER_URN]
    undeclared = user(client, "undeclared", schemas=[USER_URN], **{ENTERPRISE: {"division": "D"}})
    assert get(client, undeclared)["schemas"] == [USER_URN, ENTERPRISE]
    client.put(url(declared_only), json={"userName": "declared", ENTERPRISE: {"costCenter": "1"}})
    assert get(client, declared_only)["schemas"] == [USER_URN, ENTERPRISE]
    client.patch(url(declared_only), json=patch_body({"op": "remove", "path": f"{ENTERPRISE}:costCenter"}))
    fetched = get(client, declared_only)
    assert fetched["schemas"] == [USER_URN] and ENTERPRISE not in fetched


def test_manager_keeps_value_and_ref_and_accepts_a_bare_id(client: ScimClient) -> None:
    boss = user(client, "boss", displayName="John Smith")
    report = user(client, "report", **{ENTERPRISE: {"manager": boss["id"]}})
    assert get(client, report)[ENTERPRISE]["manager"]["value"] == boss["id"]
    client.put(url(report), json={"userName": "report", ENTERPRISE: {"manager": {
        "value": boss["id"], "$ref": f"{BASE}/scim/v2/Users/{boss['id']}", "displayName": "sent by the client"}}})
    manager = get(client, report)[ENTERPRISE]["manager"]
    assert manager["value"] == boss["id"] and manager["$ref"] == f"{BASE}/scim/v2/Users/{boss['id']}"
    assert manager.get("displayName") != "sent by the client"  # readOnly: never stored from input


def test_manager_display_name_and_ref_come_from_the_managers_user(client: ScimClient) -> None:
    boss = user(client, "boss", displayName="John Smith")
    report = user(client, "report", **{ENTERPRISE: {"manager": {"value": boss["id"], "displayName": "ignored"}}})
    assert report[ENTERPRISE]["manager"] == {"value": boss["id"], "$ref": f"{BASE}/scim/v2/Users/{boss['id']}",
                                             "displayName": "John Smith"}
    client.put(url(boss), json={"userName": "boss", "displayName": "Jane Smith"})
    assert get(client, report)[ENTERPRISE]["manager"]["displayName"] == "Jane Smith"
    listed = client.get('/scim/v2/Users?filter=userName eq "report"').json["Resources"][0]
    assert listed[ENTERPRISE]["manager"]["displayName"] == "Jane Smith"
    # A manager this directory does not hold (Entra sets managers in a second pass) stays as stored.
    orphan = user(client, "orphan", **{ENTERPRISE: {"manager": {"value": "not-here-yet"}}})
    assert orphan[ENTERPRISE]["manager"] == {"value": "not-here-yet"}


def test_versions_move_when_computed_memberships_change(client: ScimClient) -> None:
    """A user's `groups` and a group's `members.display` are part of what their ETags vouch for."""
    alice = user(client, "alice")
    team = group(client, "Team")
    before_user, before_group = get(client, alice)["meta"]["version"], get(client, team)["meta"]["version"]
    client.patch(url(team), json=patch_body({"op": "add", "path": "members", "value": [{"value": alice["id"]}]}))
    joined = get(client, alice)
    assert joined["meta"]["version"] != before_user and group_ids(joined) == [team["id"]]
    assert client.get(url(alice), headers={"If-None-Match": before_user}).status_code == 200
    # Renaming the group changes what the member shows (groups.display) ...
    version = joined["meta"]["version"]
    client.patch(url(team), json=patch_body({"op": "replace", "path": "displayName", "value": "Red Team"}))
    renamed = get(client, alice)
    assert renamed["meta"]["version"] != version and renamed["groups"][0]["display"] == "Red Team"
    # ... and renaming the member changes what the group shows (members.display).
    version = get(client, team)["meta"]["version"]
    client.put(url(alice), json={"userName": "alice", "displayName": "Alice A."})
    assert get(client, team)["meta"]["version"] != version
    # Leaving moves the user again; deleting the group moves its former members.
    version = get(client, alice)["meta"]["version"]
    client.patch(url(team), json=patch_body({"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}))
    assert get(client, alice)["meta"]["version"] != version and group_ids(get(client, alice)) == []
    assert before_group != get(client, team)["meta"]["version"]


# -- groups and membership -----------------------------------------------------------------------


def test_members_carry_value_absolute_ref_type_and_current_display(client: ScimClient) -> None:
    named = user(client, "bjensen", displayName="Babs Jensen")
    unnamed = user(client, "mpepperidge")
    inner = group(client, "Inner")
    outer = group(client, "Outer", named["id"], unnamed["id"], inner["id"])
    expected = sorted([
        {"value": named["id"], "$ref": f"{BASE}/scim/v2/Users/{named['id']}", "type": "User", "display": "Babs Jensen"},
        {"value": unnamed["id"], "$ref": f"{BASE}/scim/v2/Users/{unnamed['id']}", "type": "User",
         "display": "mpepperidge"},
        {"value": inner["id"], "$ref": f"{BASE}/scim/v2/Groups/{inner['id']}", "type": "Group", "display": "Inner"},
    ], key=lambda m: m["value"])
    for resource in (outer, get(client, outer)):
        assert sorted(resource["members"], key=lambda m: m["value"]) == expected
    client.put(url(named), json={"userName": "bjensen", "displayName": "Barbara"})
    client.put(url(inner), json={"displayName": "Inner Circle"})
    displays = {m["value"]: m["display"] for m in get(client, outer)["members"]}
    assert displays == {named["id"]: "Barbara", unnamed["id"]: "mpepperidge", inner["id"]: "Inner Circle"}
    listed = client.get('/scim/v2/Groups?filter=displayName eq "Outer"').json["Resources"][0]
    assert sorted(listed["members"], key=lambda m: m["value"]) == sorted(get(client, outer)["members"],
                                                                        key=lambda m: m["value"])


def test_member_display_and_type_sent_by_the_client_are_not_trusted(client: ScimClient) -> None:
    someone = user(client, "someone")
    team = create(client, "Group", {"displayName": "Team", "members": [
        {"value": someone["id"], "display": "Fake Name", "type": "Group", "$ref": "https://evil.example/x"}]})
    assert team["members"] == [{"value": someone["id"], "$ref": f"{BASE}/scim/v2/Users/{someone['id']}",
                                "type": "User", "display": "someone"}]


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_member_id_that_does_not_exist_is_400_invalid_value(client: ScimClient, method: str) -> None:
    real = user(client, "real")
    body = {"displayName": "Team",
            "members": [{"value": real["id"]}, {"value": "2819c223-7f76-453a-919d-413861904646"}]}
    if method == "POST":
        assert_scim_error(client.post("/scim/v2/Groups", json=body), 400, "invalidValue")
        assert client.get("/scim/v2/Groups").json["totalResults"] == 0
    else:
        team = group(client, "Team")
        assert_scim_error(client.put(url(team), json=body), 400, "invalidValue")
        assert get(client, team)["members"] == []
    assert get(client, real)["groups"] == []


def test_user_groups_are_computed_direct_memberships(client: ScimClient) -> None:
    member = user(client, "member")
    tour, staff = group(client, "Tour Guides", member["id"]), group(client, "Staff", member["id"])
    fetched = get(client, member)
    assert sorted(fetched["groups"], key=lambda g: g["value"]) == sorted([
        {"value": tour["id"], "$ref": f"{BASE}/scim/v2/Groups/{tour['id']}", "display": "Tour Guides",
         "type": "direct"},
        {"value": staff["id"], "$ref": f"{BASE}/scim/v2/Groups/{staff['id']}", "display": "Staff", "type": "direct"},
    ], key=lambda g: g["value"])
    client.put(url(tour), json={"displayName": "Guides"})
    assert [g["value"] for g in get(client, member)["groups"]] == [staff["id"]]


def test_nested_groups(client: ScimClient) -> None:
    member = user(client, "member")
    inner = group(client, "Inner", member["id"])
    outer = group(client, "Outer", inner["id"])
    assert [(m["value"], m["type"]) for m in get(client, outer)["members"]] == [(inner["id"], "Group")]
    assert [(g["value"], g["type"]) for g in get(client, member)["groups"]] == [(inner["id"], "direct")]


def test_a_group_cannot_contain_itself_directly_or_through_nesting(client: ScimClient) -> None:
    top = group(client, "Top")
    assert_scim_error(client.put(url(top), json={"displayName": "Top", "members": [{"value": top["id"]}]}), 400,
                      "invalidValue")
    bottom = group(client, "Bottom")
    middle = group(client, "Middle", bottom["id"])
    client.put(url(top), json={"displayName": "Top", "members": [{"value": middle["id"]}]})
    assert_scim_error(client.put(url(bottom), json={"displayName": "Bottom", "members": [{"value": top["id"]}]}), 400,
                      "invalidValue")
    assert get(client, bottom)["members"] == []


def test_deleting_a_user_removes_its_memberships_and_moves_the_group_version(client: ScimClient) -> None:
    leaving, staying = user(client, "leaving"), user(client, "staying")
    team = group(client, "Team", leaving["id"], staying["id"])
    other = group(client, "Other", leaving["id"])
    assert client.delete(url(leaving)).status_code == 204
    for before in (team, other):
        after = get(client, before)
        assert leaving["id"] not in member_ids(after)
        assert after["meta"]["version"] != before["meta"]["version"]
        assert after["meta"]["lastModified"] > before["meta"]["lastModified"]
    assert member_ids(get(client, team)) == [staying["id"]]
    listed = client.get("/scim/v2/Groups").json["Resources"]
    assert all(leaving["id"] not in member_ids(g) for g in listed)
    stale = client.put(url(team), json={"displayName": "Team"}, headers={"If-Match": team["meta"]["version"]})
    assert_scim_error(stale, 412, "invalidVers")


def test_deleting_a_group_removes_it_from_users_and_parent_groups(client: ScimClient) -> None:
    member = user(client, "member")
    inner = group(client, "Inner", member["id"])
    outer = group(client, "Outer", inner["id"], member["id"])
    assert client.delete(url(inner)).status_code == 204
    assert get(client, member)["groups"] == [
        {"value": outer["id"], "$ref": f"{BASE}/scim/v2/Groups/{outer['id']}", "display": "Outer", "type": "direct"}]
    assert member_ids(get(client, outer)) == [member["id"]]
    assert get(client, outer)["meta"]["version"] != outer["meta"]["version"]


def test_deleting_a_user_leaves_no_membership_or_index_row(client: ScimClient, tmp_path: Path) -> None:
    leaving = user(client, "leaving", emails=[{"value": "leaving@example.com"}], title="Cook")
    group(client, "Team", leaving["id"])
    # The keys a delete removes are those of the last write (value_keys has no index by resource).
    changed = client.patch(url(leaving), json=patch_body({"op": "replace", "path": "title", "value": "Chef"}))
    assert changed.status_code == 200
    assert client.delete(url(leaving)).status_code == 204
    for title in ("Cook", "Chef"):
        found = client.get("/scim/v2/Users", query_string={"filter": f'title eq "{title}"'}).json
        assert found["totalResults"] == 0
    leftovers = [query_db(tmp_path, f"SELECT count(*) FROM {table} WHERE {column} = ?", leaving["id"])[0]
                 for table, column in (("members", "member_id"), ("value_keys", "resource_id"), ("resources", "id"))]
    assert leftovers == [0, 0, 0]


# -- the RFC 7643 §8 examples as data ------------------------------------------------------------


def rfc_example(name: str) -> dict[str, Any]:
    return json.loads((RFC_DATA / name).read_text(encoding="utf-8"))


def writable(resource: Any, definitions: list[dict[str, Any]]) -> Any:
    """The part of a resource a client writes: drop what the published schema marks readOnly or
    writeOnly (id, meta, groups, password, manager.displayName, ...) and the computed `schemas`."""
    by_name = {d["name"]: d for d in definitions}
    if isinstance(resource, list):
        return [writable(element, definitions) for element in resource]
    kept = {}
    for key, value in resource.items():
        definition = by_name.get(key)
        if definition is None or definition["mutability"] in ("readOnly", "writeOnly"):
            continue
        subs = definition.get("subAttributes")
        kept[key] = writable(value, subs) if subs else value
    return kept


def schema_attributes(client: ScimClient, urn: str) -> list[dict[str, Any]]:
    return client.get(f"/scim/v2/Schemas/{urn}").json["attributes"]


def writable_user(client: ScimClient, resource: dict[str, Any]) -> dict[str, Any]:
    out = writable(resource, schema_attributes(client, USER_URN) + [{"name": "externalId", "mutability": "readWrite"}])
    if ENTERPRISE in resource:
        out[ENTERPRISE] = writable(resource[ENTERPRISE], schema_attributes(client, ENTERPRISE))
    return out


@pytest.mark.parametrize(("name", "extension"), [
    ("rfc7643-8.1-user-minimal.json", False),
    ("rfc7643-8.2-user-full.json", False),
    ("rfc7643-8.3-enterprise-user.json", True),
], ids=["8.1-minimal", "8.2-full", "8.3-enterprise"])
def test_rfc7643_user_examples_round_trip(client: ScimClient, name: str, extension: bool) -> None:
    example = rfc_example(name)
    created = create(client, "User", example)
    fetched = get(client, created)
    expected, actual = writable_user(client, example), writable_user(client, fetched)
    assert {key: actual.get(key) for key in expected} == expected
    assert set(actual) - set(expected) <= {"active"}  # a create may default `active` (idp-dialects S8)
    assert fetched["schemas"] == ([USER_URN, ENTERPRISE] if extension else [USER_URN])
    assert fetched["id"] != example["id"]
    assert fetched["meta"]["location"] == f"{BASE}/scim/v2/Users/{fetched['id']}"
    assert fetched["groups"] == []  # the example's groups are readOnly and not ours
    assert "password" not in fetched


def test_rfc7643_group_example_round_trips_with_real_members(client: ScimClient) -> None:
    example = rfc_example("rfc7643-8.4-group.json")
    # Posted as printed, its members do not exist here.
    assert_scim_error(client.post("/scim/v2/Groups", json=example), 400, "invalidValue")
    babs = create(client, "User", rfc_example("rfc7643-8.2-user-full.json"))
    mandy = user(client, "mpepperidge@example.com", displayName="Mandy Pepperidge")
    ids = {"2819c223-7f76-453a-919d-413861904646": babs["id"], "902c246b-6245-4190-8e05-00816be7344a": mandy["id"]}
    text = json.dumps(example)
    for rfc_id, real_id in ids.items():
        text = text.replace(rfc_id, real_id)
    created = create(client, "Group", json.loads(text))
    fetched = get(client, created)
    assert fetched["displayName"] == example["displayName"]
    assert sorted(fetched["members"], key=lambda m: m["display"]) == [
        {"value": ids[m["value"]], "$ref": f"{BASE}/scim/v2/Users/{ids[m['value']]}", "type": "User",
         "display": m["display"]} for m in sorted(example["members"], key=lambda m: m["display"])]
    assert [g["display"] for g in get(client, babs)["groups"]] == ["Tour Guides"]


def test_a_user_created_without_active_is_active_and_a_put_keeps_it(client: ScimClient) -> None:
    """SailPoint may omit `active` on create (idp-dialects S8); Okta expects it on every user (O1)."""
    created = user(client, "plain")
    assert created["active"] is True
    client.patch(url(created), json=patch_body({"op": "replace", "path": "active", "value": False}))
    assert client.put(url(created), json={"userName": "plain"}).json["active"] is False


# What a user write answers with of others: its groups and its manager's name as they are after the
# write, whether the manager stayed, changed, went, or the write changed nothing.
WRITE_ANSWERS = [
    ("PATCH title", "PATCH", [{"op": "replace", "path": "title", "value": "Lead"}], "boss"),
    ("PATCH nothing", "PATCH", [{"op": "replace", "path": "title", "value": "Guide"}], "boss"),
    ("PATCH new manager", "PATCH", [{"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": "@other"}}],
     "other"),
    ("PATCH manager removed", "PATCH", [{"op": "remove", "path": f"{ENTERPRISE}:manager"}], None),
    ("PUT same manager", "PUT", {"userName": "report", "title": "Guide", ENTERPRISE: {"manager": {"value": "@boss"}}},
     "boss"),
    ("PUT new manager", "PUT", {"userName": "report", ENTERPRISE: {"manager": {"value": "@other"}}}, "other"),
]


@pytest.mark.parametrize(("label", "method", "change", "manager"), WRITE_ANSWERS, ids=[w[0] for w in WRITE_ANSWERS])
def test_a_user_write_answers_with_current_groups_and_manager(client: ScimClient, label: str, method: str,
                                                              change: Any, manager: str | None) -> None:
    people = {name: user(client, name, displayName=f"{name.title()} Person")["id"] for name in ("boss", "other")}
    report = user(client, "report", title="Guide", **{ENTERPRISE: {"manager": {"value": people["boss"]}}})
    guides = group(client, "Guides", report["id"])["id"]
    body = json.loads(json.dumps(change).replace("@boss", people["boss"]).replace("@other", people["other"]))
    if method == "PATCH":
        response = client.patch(url(report), json=patch_body(*body))
    else:
        response = client.put(url(report), json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    answered = response.json
    assert [(g["value"], g["display"]) for g in answered["groups"]] == [(guides, "Guides")]
    if manager is None:
        assert "manager" not in answered.get(ENTERPRISE, {})
    else:
        assert answered[ENTERPRISE]["manager"]["value"] == people[manager]
        assert answered[ENTERPRISE]["manager"]["displayName"] == f"{manager.title()} Person"
    assert answered == get(client, report)  # the answer is what a GET now shows


# A created user's answer is built without reading its groups (it can have none yet) unless it has
# a manager to name: it must still be exactly what a GET shows, for every projection.
CREATE_ANSWERS = [
    ("no manager", {}, ""),
    ("no manager, groups excluded", {}, "?excludedAttributes=groups"),
    ("no manager, only groups asked", {}, "?attributes=groups"),
    ("manager", {ENTERPRISE: {"manager": {"value": "@boss"}}}, ""),
    ("manager, manager excluded", {ENTERPRISE: {"manager": {"value": "@boss"}}}, f"?excludedAttributes={ENTERPRISE}:manager"),
]


@pytest.mark.parametrize(("label", "extra", "query"), CREATE_ANSWERS, ids=[c[0] for c in CREATE_ANSWERS])
def test_a_created_user_answers_with_what_a_get_shows(client: ScimClient, label: str, extra: dict[str, Any],
                                                      query: str) -> None:
    boss = user(client, "boss", displayName="Boss Person")["id"]
    body = json.loads(json.dumps({"userName": "new", **extra}).replace("@boss", boss))
    response = client.post(f"/scim/v2/Users{query}", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    fetched = client.get(f"{response.headers['Location']}{query}")
    assert response.json == fetched.json
    if extra:
        assert ("manager" in response.json.get(ENTERPRISE, {})) == ("manager" not in query)
        if "manager" not in query:
            assert response.json[ENTERPRISE]["manager"]["displayName"] == "Boss Person"
