"""`attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9) on every response that returns
resources, honouring `returned` always/never/default (RFC 7643 §2.2), sub-attribute paths,
URN-qualified names and any case; and `excludedAttributes=members` never loads a group's members.

Each case pins the exact set of leaves a response keeps; the values of those leaves must be
those of the unprojected resource (projection selects, it never alters).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from scimd.schema import USER_TYPE
from scimd.store import Store
from tests.conftest import ScimClient, patch_body

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SEARCH_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BY_NAME = quote('userName eq "bjensen"')

BJENSEN = {
    "schemas": [USER_URN, ENTERPRISE],
    "userName": "bjensen",
    "externalId": "701984",
    "name": {"formatted": "Ms. Barbara J Jensen, III", "familyName": "Jensen", "givenName": "Barbara"},
    "displayName": "Babs Jensen",
    "title": "Tour Guide",
    "active": True,
    "password": "t1meMa$heen",
    "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True},
               {"value": "babs@jensen.org", "type": "home"}],
    ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations", "manager": {"value": "boss-id"}},
}

NAME = {"name.formatted", "name.familyName", "name.givenName"}
EMAILS = {"emails.value", "emails.type", "emails.primary"}
GROUPS = {"groups.value", "groups.$ref", "groups.display", "groups.type"}
EXT = {f"{ENTERPRISE}/employeeNumber", f"{ENTERPRISE}/department", f"{ENTERPRISE}/manager.value"}
META = {"meta.resourceType", "meta.created", "meta.lastModified", "meta.location", "meta.version"}
ALWAYS = {"schemas", "id"}
DEFAULT = ALWAYS | {"userName", "externalId", "displayName", "title", "active"} | NAME | EMAILS | GROUPS | EXT | META

USER_CASES: list[tuple[str, str, set[str]]] = [
    ("none", "", DEFAULT),
    ("one", "attributes=userName", ALWAYS | {"userName"}),
    ("any-case", "attributes=USERNAME", ALWAYS | {"userName"}),
    ("urn-qualified", f"attributes={USER_URN}:userName", ALWAYS | {"userName"}),
    ("urn-any-case", f"attributes={USER_URN.upper()}:username", ALWAYS | {"userName"}),
    ("several", "attributes=userName,displayName,title", ALWAYS | {"userName", "displayName", "title"}),
    ("spaces", "attributes=userName, title", ALWAYS | {"userName", "title"}),
    ("sub-attribute", "attributes=name.givenName", ALWAYS | {"name.givenName"}),
    ("sub-attribute-any-case", "attributes=NAME.GIVENNAME", ALWAYS | {"name.givenName"}),
    ("sub-attribute-urn", f"attributes={USER_URN}:name.familyName", ALWAYS | {"name.familyName"}),
    ("complex", "attributes=name", ALWAYS | NAME),
    ("multi-valued", "attributes=emails", ALWAYS | EMAILS),
    ("multi-valued-sub", "attributes=emails.value", ALWAYS | {"emails.value"}),
    ("multi-valued-two-subs", "attributes=emails.value,emails.type", ALWAYS | {"emails.value", "emails.type"}),
    ("extension-attribute", f"attributes={ENTERPRISE}:department", ALWAYS | {f"{ENTERPRISE}/department"}),
    ("extension-sub", f"attributes={ENTERPRISE}:manager.value", ALWAYS | {f"{ENTERPRISE}/manager.value"}),
    ("extension-whole", f"attributes={ENTERPRISE}", ALWAYS | EXT),
    ("extension-any-case", f"attributes={ENTERPRISE.lower()}:DEPARTMENT", ALWAYS | {f"{ENTERPRISE}/department"}),
    ("common", "attributes=externalId", ALWAYS | {"externalId"}),
    ("meta", "attributes=meta", ALWAYS | META),
    ("meta-sub", "attributes=meta.version", ALWAYS | {"meta.version"}),
    ("always-only", "attributes=id", ALWAYS),
    ("computed-groups", "attributes=groups", ALWAYS | GROUPS),
    ("computed-groups-sub", "attributes=groups.display", ALWAYS | {"groups.display"}),
    ("never-password", "attributes=password", ALWAYS),
    ("never-password-and-more", "attributes=password,userName", ALWAYS | {"userName"}),
    ("unknown-ignored", "attributes=userName,favouriteColour", ALWAYS | {"userName"}),
    ("exclude-one", "excludedAttributes=title", DEFAULT - {"title"}),
    ("exclude-any-case", "excludedAttributes=TITLE,DisplayName", DEFAULT - {"title", "displayName"}),
    ("exclude-complex", "excludedAttributes=name", DEFAULT - NAME),
    ("exclude-sub", "excludedAttributes=name.givenName", DEFAULT - {"name.givenName"}),
    ("exclude-multi-valued", "excludedAttributes=emails", DEFAULT - EMAILS),
    ("exclude-multi-valued-sub", f"excludedAttributes={USER_URN}:emails.type", DEFAULT - {"emails.type"}),
    ("exclude-extension", f"excludedAttributes={ENTERPRISE}", DEFAULT - EXT),
    ("exclude-extension-attr", f"excludedAttributes={ENTERPRISE}:manager", DEFAULT - {f"{ENTERPRISE}/manager.value"}),
    ("exclude-groups", "excludedAttributes=groups", DEFAULT - GROUPS),
    ("exclude-meta", "excludedAttributes=meta", DEFAULT - META),
    ("exclude-always-ignored", "excludedAttributes=id,schemas", DEFAULT),
    ("exclude-never", "excludedAttributes=password", DEFAULT),
    ("exclude-unknown", "excludedAttributes=favouriteColour", DEFAULT),
]


def leaves(value: Any, prefix: str = "") -> dict[str, list[Any]]:
    """Every leaf of a resource by path, `urn/attr.sub` for extensions, elements of multi-valued
    attributes merged: {"emails.value": ["a@x", "b@x"], ...}."""
    found: dict[str, list[Any]] = {}
    if isinstance(value, dict):
        for key, sub in value.items():
            if key.startswith("urn:"):
                path = f"{key}/"
            elif prefix and not prefix.endswith("/"):
                path = f"{prefix}.{key}"
            else:
                path = f"{prefix}{key}"
            for leaf, values in leaves(sub, path).items():
                found.setdefault(leaf, []).extend(values)
    elif isinstance(value, list) and value and all(isinstance(element, dict) for element in value):
        for element in value:
            for leaf, values in leaves(element, prefix).items():
                found.setdefault(leaf, []).extend(values)
    else:
        found[prefix] = [value]
    return found


def assert_projected(resource: dict[str, Any], full: dict[str, Any], expected: set[str]) -> None:
    kept, everything = leaves(resource), leaves(full)
    assert set(kept) == expected
    for path in expected:
        assert all(value in everything[path] for value in kept[path]), path


@pytest.fixture
def bjensen(client: ScimClient) -> dict[str, Any]:
    """The rich user, member of one group, as GET returns it without projection."""
    created = client.post("/scim/v2/Users", json=BJENSEN).json
    client.post("/scim/v2/Groups", json={"displayName": "Tour Guides", "members": [{"value": created["id"]}]})
    full = client.get(f"/scim/v2/Users/{created['id']}").json
    assert set(leaves(full)) == DEFAULT  # the baseline every case is cut from
    return full


def query(text: str) -> str:
    name, _, value = text.partition("=")
    return f"{name}={quote(value)}" if text else ""


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in USER_CASES], ids=[i for i, _, _ in USER_CASES])
def test_get_user(client: ScimClient, bjensen: dict[str, Any], text: str, expected: set[str]) -> None:
    response = client.get(f"/scim/v2/Users/{bjensen['id']}?{query(text)}")
    assert response.status_code == 200
    assert_projected(response.json, bjensen, expected)
    assert response.headers["ETag"] == bjensen["meta"]["version"]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in USER_CASES], ids=[i for i, _, _ in USER_CASES])
def test_list_users(client: ScimClient, bjensen: dict[str, Any], text: str, expected: set[str]) -> None:
    body = client.get(f"/scim/v2/Users?filter={BY_NAME}&{query(text)}").json
    assert body["totalResults"] == 1
    assert_projected(body["Resources"][0], bjensen, expected)


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in USER_CASES], ids=[i for i, _, _ in USER_CASES])
def test_search_users(client: ScimClient, bjensen: dict[str, Any], text: str, expected: set[str]) -> None:
    """POST .search takes the same names as JSON arrays (RFC 7644 §3.4.3)."""
    request: dict[str, Any] = {"schemas": [SEARCH_URN], "filter": 'userName eq "bjensen"'}
    if text:
        name, _, value = text.partition("=")
        request[name] = [part.strip() for part in value.split(",")]
    for endpoint in ("/scim/v2/Users/.search", "/scim/v2/.search"):
        body = client.post(endpoint, json=request).json
        assert body["totalResults"] == 1
        assert_projected(body["Resources"][0], bjensen, expected)


WRITES: list[tuple[str, str, str, Any]] = [
    ("post", "POST", "/scim/v2/Users", {**BJENSEN, "userName": "other"}),
    ("put", "PUT", "/scim/v2/Users/{id}", {**BJENSEN, "title": "Tour Guide"}),
    ("patch", "PATCH", "/scim/v2/Users/{id}", patch_body({"op": "replace", "path": "title", "value": "Tour Guide"})),
]


@pytest.mark.parametrize(("method", "path", "body"), [(m, p, b) for _, m, p, b in WRITES], ids=[i for i, *_ in WRITES])
@pytest.mark.parametrize(("text", "expected"), [
    ("attributes=title,name.givenName", ALWAYS | {"title", "name.givenName"}),
    ("excludedAttributes=emails,meta,groups,name", DEFAULT - EMAILS - META - GROUPS - NAME),
], ids=["attributes", "excludedAttributes"])
def test_write_responses_are_projected(client: ScimClient, bjensen: dict[str, Any], method: str, path: str, body: Any,
                                       text: str, expected: set[str]) -> None:
    response = client.open(f"{path.format(id=bjensen['id'])}?{query(text)}", method=method, json=body)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    assert set(leaves(response.json)) == expected
    assert response.headers["ETag"]


# -- groups --------------------------------------------------------------------------------------


GROUP_META = META
MEMBERS = {"members.value", "members.$ref", "members.type", "members.display"}
GROUP_DEFAULT = ALWAYS | {"displayName", "externalId"} | MEMBERS | GROUP_META
GROUP_CASES: list[tuple[str, str, set[str]]] = [
    ("none", "", GROUP_DEFAULT),
    ("display-name", "attributes=displayName", ALWAYS | {"displayName"}),
    ("members", "attributes=members", ALWAYS | MEMBERS),
    ("members-value", "attributes=members.value", ALWAYS | {"members.value"}),
    ("members-display-any-case", "attributes=MEMBERS.DISPLAY", ALWAYS | {"members.display"}),
    ("urn-qualified", "attributes=urn:ietf:params:scim:schemas:core:2.0:Group:displayName", ALWAYS | {"displayName"}),
    ("exclude-members", "excludedAttributes=members", GROUP_DEFAULT - MEMBERS),
    ("exclude-members-any-case", "excludedAttributes=Members", GROUP_DEFAULT - MEMBERS),
    ("exclude-member-display", "excludedAttributes=members.display", GROUP_DEFAULT - {"members.display"}),
]


@pytest.fixture
def tour_guides(client: ScimClient, bjensen: dict[str, Any]) -> dict[str, Any]:
    found = client.get('/scim/v2/Groups?filter=displayName eq "Tour Guides"').json["Resources"][0]
    client.put(f"/scim/v2/Groups/{found['id']}", json={"displayName": "Tour Guides", "externalId": "g-1",
                                                       "members": [{"value": bjensen["id"]}]})
    full = client.get(f"/scim/v2/Groups/{found['id']}").json
    assert set(leaves(full)) == GROUP_DEFAULT
    return full


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in GROUP_CASES], ids=[i for i, _, _ in GROUP_CASES])
def test_get_and_list_group(client: ScimClient, tour_guides: dict[str, Any], text: str, expected: set[str]) -> None:
    single = client.get(f"/scim/v2/Groups/{tour_guides['id']}?{query(text)}").json
    listed = client.get(f"/scim/v2/Groups?{query(text)}").json["Resources"][0]
    for resource in (single, listed):
        assert_projected(resource, tour_guides, expected)


def test_group_patch_answers_204_unless_attributes_are_asked_for(client: ScimClient,
                                                                 tour_guides: dict[str, Any]) -> None:
    operation = patch_body({"op": "replace", "path": "externalId", "value": "g-2"})
    plain = client.patch(f"/scim/v2/Groups/{tour_guides['id']}", json=operation)
    assert plain.status_code == 204 and plain.headers["ETag"]
    asked = client.patch(f"/scim/v2/Groups/{tour_guides['id']}?attributes=externalId", json=operation)
    assert asked.status_code == 200
    assert asked.json == {"schemas": tour_guides["schemas"], "id": tour_guides["id"], "externalId": "g-2"}


@pytest.mark.parametrize(("path", "loads_members"), [
    ("/scim/v2/Groups/{id}?excludedAttributes=members", False),
    ("/scim/v2/Groups/{id}?excludedAttributes=MEMBERS,externalId", False),
    ("/scim/v2/Groups/{id}?attributes=displayName", False),
    ("/scim/v2/Groups?excludedAttributes=members", False),
    ("/scim/v2/Groups/{id}", True),
    ("/scim/v2/Groups/{id}?excludedAttributes=members.display", True),
    ("/scim/v2/Groups?attributes=members.value", True),
], ids=["get-excluded", "get-excluded-any-case", "get-other-attributes", "list-excluded", "get-default",
        "get-sub-excluded", "list-members-asked"])
def test_members_are_loaded_only_when_returned(app_and_store: tuple[Any, Store], tour_guides: dict[str, Any], path: str,
                                               loads_members: bool) -> None:
    """Entra's `GET /Groups/{id}?excludedAttributes=members` on a huge group must cost nothing (E21):
    the statements the store runs for the request show whether the member table was read."""
    app, store = app_and_store
    statements: list[str] = []
    store.reader().set_trace_callback(statements.append)  # the test client runs the app in this thread
    try:
        response = ScimClient(app).get(path.format(id=tour_guides["id"]))
    finally:
        store.reader().set_trace_callback(None)
    assert response.status_code == 200
    assert any("FROM resources" in s for s in statements), statements  # the trace does see this request
    assert any("FROM members" in s for s in statements) is loads_members, statements


def test_user_groups_are_loaded_only_when_returned(app_and_store: tuple[Any, Store], bjensen: dict[str, Any]) -> None:
    app, store = app_and_store
    statements: list[str] = []
    store.reader().set_trace_callback(statements.append)
    try:
        ScimClient(app).get(f"/scim/v2/Users/{bjensen['id']}?excludedAttributes=groups")
        skipped = list(statements)
        ScimClient(app).get(f"/scim/v2/Users/{bjensen['id']}")
    finally:
        store.reader().set_trace_callback(None)
    assert not any("FROM members" in s for s in skipped)
    assert any("FROM members" in s for s in statements[len(skipped):])


@pytest.mark.parametrize("text", [
    "excludedAttributes=nickName",  # one bjensen does not have: nothing of hers is removed
    f"excludedAttributes={ENTERPRISE}:costCenter",
    "attributes=userName,externalId,name,displayName,title,active,emails,groups,meta,"
    f"{ENTERPRISE}:employeeNumber,{ENTERPRISE}:department,{ENTERPRISE}:manager",
])
def test_a_projection_that_removes_nothing_answers_what_the_default_does(client: ScimClient,
                                                                        bjensen: dict[str, Any], text: str) -> None:
    """The default projection answers the rendering as it is; these are built attribute by
    attribute. Equal answers show the shortcut changes nothing."""
    projected = client.get(f"/scim/v2/Users/{bjensen['id']}?{query(text)}").json
    assert projected == bjensen


def test_a_password_that_reached_a_stored_document_is_still_never_returned(
        app_and_store: tuple[Any, Store], bjensen: dict[str, Any]) -> None:
    """Passwords are stored apart from the document (hashed); should one ever be in it, the
    projection still drops it (RFC 7643 §4.1.1: returned "never")."""
    app, store = app_and_store
    row = store.view().get(USER_TYPE, bjensen["id"])
    assert row is not None
    with store.write() as tx:
        tx.update(USER_TYPE, row, {**row.doc, "password": "t1meMa$heen"}, row.secret)
    for text in ("", "attributes=password", "excludedAttributes=title"):
        answered = ScimClient(app).get(f"/scim/v2/Users/{bjensen['id']}?{query(text)}")
        assert answered.status_code == 200 and "t1meMa$heen" not in answered.text and "password" not in answered.json
