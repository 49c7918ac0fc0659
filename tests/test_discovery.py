"""Discovery (RFC 7644 §4; RFC 7643 §5-§8.7): ServiceProviderConfig advertises exactly what works,
each advertised feature is exercised here; ResourceTypes and Schemas are complete RFC 7643
representations, every attribute carrying its characteristics; everything is readable without
a token, and every attribute a response carries is described by the published schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import ScimClient, assert_scim_error, make_app, patch_body

BASE = "https://scim.example.com"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SCHEMA_URN = "urn:ietf:params:scim:schemas:core:2.0:Schema"
LIST_URN = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SCIM_JSON = "application/scim+json; charset=utf-8"
RFC_DATA = Path(__file__).parent / "data" / "rfc7643"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[ScimClient]:
    app, store = make_app(tmp_path, SHOWCASE_BASE_URL=BASE, SCIM_BULK_MAX_OPERATIONS="3", SCIM_MAX_RESULTS="5")
    yield ScimClient(app)
    store.close()


def discover(client: ScimClient, path: str) -> dict[str, Any]:
    response = client.get(f"/scim/v2{path}", auth=False)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == SCIM_JSON
    return response.json


# -- readable without a token --------------------------------------------------------------------


DISCOVERY = ["/ServiceProviderConfig", "/ServiceProviderConfigs", "/ResourceTypes", "/ResourceTypes/User",
             "/ResourceTypes/Group", "/Schemas", f"/Schemas/{USER_URN}", f"/Schemas/{GROUP_URN}",
             f"/Schemas/{ENTERPRISE}"]


@pytest.mark.parametrize("path", DISCOVERY)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz"],
                         ids=["no-token", "wrong-token", "basic"])
def test_discovery_needs_no_token(client: ScimClient, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get(f"/scim/v2{path}", headers=headers, auth=False)
    assert response.status_code == 200
    assert response.content_type == SCIM_JSON


# -- ServiceProviderConfig -----------------------------------------------------------------------


def test_service_provider_config_document(client: ScimClient) -> None:
    spc = discover(client, "/ServiceProviderConfig")
    assert spc["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert spc["documentationUri"].startswith("https://")
    assert spc["bulk"] == {"supported": True, "maxOperations": 3, "maxPayloadSize": 1_048_576}
    assert spc["filter"] == {"supported": True, "maxResults": 5}
    assert spc["meta"] == {"resourceType": "ServiceProviderConfig", "location": f"{BASE}/scim/v2/ServiceProviderConfig"}
    assert discover(client, "/ServiceProviderConfigs") == spc  # the SCIM 1.1 plural SailPoint uses


def test_only_bearer_authentication_is_advertised(client: ScimClient) -> None:
    schemes = discover(client, "/ServiceProviderConfig")["authenticationSchemes"]
    assert len(schemes) == 1
    bearer = schemes[0]
    assert bearer["type"] == "oauthbearertoken" and bearer["primary"] is True
    assert bearer["name"] and bearer["description"] and "6750" in bearer["specUri"]
    # What is not advertised does not work either: HTTP Basic with the token as password.
    response = client.get("/scim/v2/Users", headers={"Authorization": "Basic OnRlc3QtdG9rZW4tMDEyMzQ1Njc4OQ=="},
                          auth=False)
    assert_scim_error(response, 401)


def create_user(client: ScimClient, name: str, **attributes: Any) -> dict[str, Any]:
    response = client.post("/scim/v2/Users", json={"userName": name, **attributes})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


def probe_patch(client: ScimClient) -> None:
    someone = create_user(client, "someone")
    response = client.patch(f"/scim/v2/Users/{someone['id']}",
                            json=patch_body({"op": "replace", "path": "title", "value": "Guide"}))
    assert response.status_code == 200 and response.json["title"] == "Guide"


def probe_bulk(client: ScimClient) -> None:
    operation = {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"userName": "bulky"}}
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [operation]}
    response = client.post("/scim/v2/Bulk", json=body)
    assert response.status_code == 200 and response.json["Operations"][0]["status"] == "201"
    too_many = client.post("/scim/v2/Bulk", json={**body, "Operations": [operation] * 4})
    assert_scim_error(too_many, 413)  # maxOperations is the advertised 3


def probe_filter(client: ScimClient) -> None:
    for index in range(7):
        create_user(client, f"user{index}")
    found = client.get('/scim/v2/Users?filter=userName eq "USER3"').json
    assert [r["userName"] for r in found["Resources"]] == ["user3"]
    capped = client.get("/scim/v2/Users?count=100").json
    assert len(capped["Resources"]) == 5 and capped["totalResults"] == 7  # maxResults is the advertised 5


def probe_change_password(client: ScimClient) -> None:
    someone = create_user(client, "someone", password="first-password")
    response = client.patch(f"/scim/v2/Users/{someone['id']}",
                            json=patch_body({"op": "replace", "path": "password", "value": "second-password"}))
    assert response.status_code == 200
    assert response.headers["ETag"] != someone["meta"]["version"]


def probe_sort(client: ScimClient) -> None:
    for name in ("b", "c", "a"):
        create_user(client, name)
    listed = client.get("/scim/v2/Users?sortBy=userName&sortOrder=descending").json["Resources"]
    assert [r["userName"] for r in listed] == ["c", "b", "a"]


def probe_etag(client: ScimClient) -> None:
    someone = create_user(client, "someone")
    cached = client.get(f"/scim/v2/Users/{someone['id']}", headers={"If-None-Match": someone["meta"]["version"]})
    assert cached.status_code == 304


def probe_pagination(client: ScimClient) -> None:
    for index in range(3):
        create_user(client, f"user{index}")
    first = client.get("/scim/v2/Users?cursor=&count=2").json
    second = client.get(f"/scim/v2/Users?cursor={first['nextCursor']}&count=2").json
    assert len(first["Resources"]) + len(second["Resources"]) == 3 and "nextCursor" not in second


PROBES: dict[str, Callable[[ScimClient], None]] = {
    "patch": probe_patch, "bulk": probe_bulk, "filter": probe_filter, "changePassword": probe_change_password,
    "sort": probe_sort, "etag": probe_etag, "pagination": probe_pagination,
}


def test_every_feature_flag_has_a_probe(client: ScimClient) -> None:
    spc = discover(client, "/ServiceProviderConfig")
    flags = {key for key, value in spc.items() if isinstance(value, dict) and key != "meta"}
    assert flags == set(PROBES)


@pytest.mark.parametrize("feature", PROBES)
def test_an_advertised_feature_works(client: ScimClient, feature: str) -> None:
    setting = discover(client, "/ServiceProviderConfig")[feature]
    advertised = setting.get("supported", setting.get("cursor") and setting.get("index"))
    assert advertised is True
    PROBES[feature](client)


# -- ResourceTypes -------------------------------------------------------------------------------


RESOURCE_TYPES = {
    "User": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User", "name": "User",
             "endpoint": "/Users", "description": "User Account", "schema": USER_URN,
             "schemaExtensions": [{"schema": ENTERPRISE, "required": False}],
             "meta": {"resourceType": "ResourceType", "location": f"{BASE}/scim/v2/ResourceTypes/User"}},
    "Group": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "Group", "name": "Group",
              "endpoint": "/Groups", "description": "Group", "schema": GROUP_URN, "schemaExtensions": [],
              "meta": {"resourceType": "ResourceType", "location": f"{BASE}/scim/v2/ResourceTypes/Group"}},
}


def test_resource_types_list(client: ScimClient) -> None:
    listed = discover(client, "/ResourceTypes")
    assert listed["schemas"] == [LIST_URN]
    assert (listed["totalResults"], listed["itemsPerPage"], listed["startIndex"]) == (2, 2, 1)
    assert {r["id"]: r for r in listed["Resources"]} == RESOURCE_TYPES


@pytest.mark.parametrize("name", ["User", "Group"])
def test_one_resource_type(client: ScimClient, name: str) -> None:
    assert discover(client, f"/ResourceTypes/{name}") == RESOURCE_TYPES[name]


@pytest.mark.parametrize("path", ["/ResourceTypes/Nope", "/ResourceTypes/Users", f"/Schemas/{USER_URN}x",
                                  "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Nope", "/Schemas/User"])
def test_unknown_discovery_id_is_404(client: ScimClient, path: str) -> None:
    assert_scim_error(client.get(f"/scim/v2{path}", auth=False), 404)


# -- Schemas -------------------------------------------------------------------------------------


# RFC 7643 §4.1-§4.3 (and the `display` this server returns on members): every attribute, in order.
ATTRIBUTE_NAMES = {
    USER_URN: ["userName", "name", "displayName", "nickName", "profileUrl", "title", "userType", "preferredLanguage",
               "locale", "timezone", "active", "password", "emails", "phoneNumbers", "ims", "photos", "addresses",
               "groups", "entitlements", "roles", "x509Certificates"],
    GROUP_URN: ["displayName", "members"],
    ENTERPRISE: ["employeeNumber", "costCenter", "organization", "division", "department", "manager"],
}
MULTI_VALUE_SUBS = ["value", "display", "type", "primary"]
SUB_ATTRIBUTE_NAMES = {
    (USER_URN, "name"): ["formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix"],
    (USER_URN, "addresses"): ["formatted", "streetAddress", "locality", "region", "postalCode", "country", "type",
                              "primary"],
    (USER_URN, "groups"): ["value", "$ref", "display", "type"],
    **{(USER_URN, attr): MULTI_VALUE_SUBS for attr in ("emails", "phoneNumbers", "ims", "photos", "entitlements",
                                                        "roles", "x509Certificates")},
    (GROUP_URN, "members"): ["value", "$ref", "display", "type"],
    (ENTERPRISE, "manager"): ["value", "$ref", "displayName"],
}

# Characteristics RFC 7643 §4 and §8.7.1 give (and the issue: Group displayName unique).
CHARACTERISTICS: list[tuple[str, str, dict[str, Any]]] = [
    (USER_URN, "userName", {"type": "string", "multiValued": False, "required": True, "caseExact": False,
                            "mutability": "readWrite", "returned": "default", "uniqueness": "server"}),
    (USER_URN, "name", {"type": "complex", "multiValued": False, "required": False}),
    (USER_URN, "name.givenName", {"type": "string", "caseExact": False, "mutability": "readWrite"}),
    (USER_URN, "displayName", {"type": "string", "required": False, "uniqueness": "none"}),
    (USER_URN, "profileUrl", {"type": "reference", "referenceTypes": ["external"]}),
    (USER_URN, "active", {"type": "boolean", "multiValued": False, "mutability": "readWrite"}),
    (USER_URN, "password", {"type": "string", "mutability": "writeOnly", "returned": "never", "required": False}),
    (USER_URN, "emails", {"type": "complex", "multiValued": True}),
    (USER_URN, "emails.value", {"type": "string", "multiValued": False}),
    (USER_URN, "emails.type", {"canonicalValues": ["work", "home", "other"]}),
    (USER_URN, "emails.primary", {"type": "boolean"}),
    (USER_URN, "phoneNumbers.type", {"canonicalValues": ["work", "home", "mobile", "fax", "pager", "other"]}),
    (USER_URN, "ims.type", {"canonicalValues": ["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"]}),
    (USER_URN, "photos.value", {"type": "reference", "referenceTypes": ["external"]}),
    (USER_URN, "photos.type", {"canonicalValues": ["photo", "thumbnail"]}),
    (USER_URN, "addresses.type", {"canonicalValues": ["work", "home", "other"]}),
    (USER_URN, "groups", {"type": "complex", "multiValued": True, "mutability": "readOnly"}),
    (USER_URN, "groups.value", {"mutability": "readOnly"}),
    (USER_URN, "groups.$ref", {"type": "reference", "referenceTypes": ["User", "Group"], "mutability": "readOnly"}),
    (USER_URN, "groups.type", {"canonicalValues": ["direct", "indirect"], "mutability": "readOnly"}),
    (USER_URN, "x509Certificates.value", {"type": "binary"}),
    (GROUP_URN, "displayName", {"type": "string", "required": True, "caseExact": False, "uniqueness": "server"}),
    (GROUP_URN, "members", {"type": "complex", "multiValued": True, "required": False}),
    (GROUP_URN, "members.value", {"type": "string", "mutability": "immutable"}),
    (GROUP_URN, "members.$ref", {"type": "reference", "referenceTypes": ["User", "Group"], "mutability": "immutable"}),
    (GROUP_URN, "members.type", {"canonicalValues": ["User", "Group"], "mutability": "immutable"}),
    (GROUP_URN, "members.display", {"mutability": "readOnly"}),
    (ENTERPRISE, "employeeNumber", {"type": "string", "multiValued": False, "required": False}),
    (ENTERPRISE, "manager", {"type": "complex", "multiValued": False}),
    (ENTERPRISE, "manager.value", {"type": "string"}),
    (ENTERPRISE, "manager.$ref", {"type": "reference", "referenceTypes": ["User"]}),
    (ENTERPRISE, "manager.displayName", {"type": "string", "mutability": "readOnly"}),
]

TYPES = {"string", "boolean", "decimal", "integer", "dateTime", "binary", "reference", "complex"}
ENUMS = {"mutability": {"readOnly", "readWrite", "immutable", "writeOnly"},
         "returned": {"always", "never", "default", "request"}, "uniqueness": {"none", "server", "global"}}


def test_schemas_list(client: ScimClient) -> None:
    listed = discover(client, "/Schemas")
    assert listed["schemas"] == [LIST_URN]
    assert (listed["totalResults"], listed["itemsPerPage"], listed["startIndex"]) == (6, 6, 1)
    # The resource schemas, then the service provider's own (RFC 7643 §8.7.2).
    assert [s["id"] for s in listed["Resources"]] == [
        USER_URN, GROUP_URN, ENTERPRISE, "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig",
        "urn:ietf:params:scim:schemas:core:2.0:ResourceType", "urn:ietf:params:scim:schemas:core:2.0:Schema"]
    for schema in listed["Resources"]:
        assert discover(client, f"/Schemas/{schema['id']}") == schema


@pytest.mark.parametrize("urn", [USER_URN, GROUP_URN, ENTERPRISE], ids=["User", "Group", "EnterpriseUser"])
def test_schema_document(client: ScimClient, urn: str) -> None:
    schema = discover(client, f"/Schemas/{urn}")
    assert schema["schemas"] == [SCHEMA_URN]
    assert schema["id"] == urn and schema["name"] and schema["description"]
    assert schema["meta"] == {"resourceType": "Schema", "location": f"{BASE}/scim/v2/Schemas/{urn}"}
    assert [a["name"] for a in schema["attributes"]] == ATTRIBUTE_NAMES[urn]
    for attribute in schema["attributes"]:
        if attribute["type"] == "complex":
            assert [s["name"] for s in attribute["subAttributes"]] == SUB_ATTRIBUTE_NAMES[(urn, attribute["name"])]


def walk(attributes: list[dict[str, Any]], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, definition) of every attribute and sub-attribute: `name`, `name.givenName`."""
    for attribute in attributes:
        path = f"{prefix}{attribute['name']}"
        yield path, attribute
        yield from walk(attribute.get("subAttributes", []), f"{path}.")


def all_attributes() -> list[tuple[str, str]]:
    found = []
    for urn, names in ATTRIBUTE_NAMES.items():
        for name in names:
            found.append((urn, name))
            found += [(urn, f"{name}.{sub}") for (u, parent), subs in SUB_ATTRIBUTE_NAMES.items()
                      if u == urn and parent == name for sub in subs]
    return found


def definition(client: ScimClient, urn: str, path: str) -> dict[str, Any]:
    schema = discover(client, f"/Schemas/{urn}")
    return dict(walk(schema["attributes"]))[path]


@pytest.mark.parametrize(("urn", "path"), all_attributes(),
                         ids=[f"{u.rsplit(':', 1)[-1]}:{p}" for u, p in all_attributes()])
def test_every_attribute_carries_its_characteristics(client: ScimClient, urn: str, path: str) -> None:
    """RFC 7643 §7: name, type, multiValued, description, required, caseExact (strings), canonicalValues
    (when defined), referenceTypes (references), mutability, returned, uniqueness; sub-attributes of
    complex attributes, which are not complex themselves."""
    attribute = definition(client, urn, path)
    assert attribute["type"] in TYPES
    assert isinstance(attribute["multiValued"], bool) and isinstance(attribute["required"], bool)
    assert isinstance(attribute["description"], str) and attribute["description"]
    for key, allowed in ENUMS.items():
        assert attribute[key] in allowed, key
    assert ("caseExact" in attribute) is (attribute["type"] in ("string", "reference", "binary"))
    assert isinstance(attribute.get("caseExact", False), bool)
    if attribute["type"] == "reference":
        assert attribute["referenceTypes"] and all(isinstance(t, str) for t in attribute["referenceTypes"])
    else:
        assert "referenceTypes" not in attribute
    if "canonicalValues" in attribute:
        assert attribute["canonicalValues"] and all(isinstance(v, str) for v in attribute["canonicalValues"])
    is_sub = "." in path
    assert ("subAttributes" in attribute) is (attribute["type"] == "complex")
    assert not (is_sub and attribute["type"] == "complex")


@pytest.mark.parametrize(("urn", "path", "expected"), CHARACTERISTICS,
                         ids=[f"{u.rsplit(':', 1)[-1]}:{p}" for u, p, _ in CHARACTERISTICS])
def test_rfc_characteristics(client: ScimClient, urn: str, path: str, expected: dict[str, Any]) -> None:
    attribute = definition(client, urn, path)
    assert {key: attribute.get(key) for key in expected} == expected


def described_paths(client: ScimClient, urn: str) -> set[str]:
    return {path.lower() for path, _ in walk(discover(client, f"/Schemas/{urn}")["attributes"])}


def response_paths(resource: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in resource.items():
        yield f"{prefix}{key}"
        elements = value if isinstance(value, list) else [value]
        for element in elements:
            if isinstance(element, dict) and not prefix:
                yield from response_paths(element, f"{key}.")


def test_every_attribute_a_response_carries_is_described(client: ScimClient) -> None:
    """A client that reads /Schemas can interpret every attribute this server returns."""
    boss = client.post("/scim/v2/Users", json={"userName": "boss"}).json
    example = json.loads((RFC_DATA / "rfc7643-8.3-enterprise-user.json").read_text())
    example[ENTERPRISE]["manager"]["value"] = boss["id"]
    user = client.post("/scim/v2/Users", json=example).json
    group = client.post("/scim/v2/Groups", json={"displayName": "G", "members": [{"value": user["id"]}]}).json
    user = client.get(f"/scim/v2/Users/{user['id']}").json
    common = {"schemas", "id", "externalid", "meta"}
    user_paths = {p.lower() for p in response_paths({k: v for k, v in user.items() if k != ENTERPRISE})}
    assert {p for p in user_paths if p.split(".")[0] not in common} <= described_paths(client, USER_URN)
    assert {p.lower() for p in response_paths(user[ENTERPRISE])} <= described_paths(client, ENTERPRISE)
    group_paths = {p.lower() for p in response_paths(group)}
    assert {p for p in group_paths if p.split(".")[0] not in common} <= described_paths(client, GROUP_URN)
