"""The PATCH case table of test_patch.py run through HTTP: create `before` with POST, PATCH, GET.

Successes must show the `after` document and the expected member set, and move `meta.version`
only when something changed; errors must be SCIM errors that leave the resource and its version
untouched (all operations or none, RFC 7644 §3.5.2).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import ScimClient, assert_scim_error
from tests.test_patch import CASES, body_of

SERVER_SET = ("id", "meta", "schemas", "groups", "members")


def with_real_ids(client: ScimClient, case: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Create one User per `<uN>` placeholder and put its id in place of the placeholder."""
    text = json.dumps(case)
    ids = {}
    for placeholder in sorted(set(re.findall(r"<u\d+>", text))):
        response = client.post("/scim/v2/Users", json={"userName": f"member-{placeholder[2:-1]}"})
        assert response.status_code == 201, response.get_data(as_text=True)
        ids[placeholder] = response.json["id"]
        text = text.replace(placeholder, ids[placeholder])
    return json.loads(text), ids


def stored(resource: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key not in SERVER_SET}


def member_ids(resource: dict[str, Any]) -> set[str]:
    return {member["value"] for member in resource.get("members") or []}


def expected_members(case: dict[str, Any]) -> set[str]:
    changes = case["memberChanges"]
    if changes["replace"] is not None:
        return set(changes["replace"])
    return (set(case["members"]) - set(changes["remove"])) | set(changes["add"])


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case_over_http(client: ScimClient, case: dict[str, Any]) -> None:
    case, _ = with_real_ids(client, case)
    endpoint = "/scim/v2/Groups" if case["type"] == "Group" else "/scim/v2/Users"
    created = client.post(endpoint, json={**case["before"], "members": [{"value": m} for m in case.get("members", [])]}
                          if case["type"] == "Group" else case["before"])
    assert created.status_code == 201, created.get_data(as_text=True)
    url = f"{endpoint}/{created.json['id']}"
    before = client.get(url).json
    assert stored(before) == case["before"]

    response = client.patch(url, json=body_of(case))

    after = client.get(url).json
    if "error" in case:
        assert_scim_error(response, 400, case["scimType"])
        assert after == before
        return
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    assert stored(after) == case["after"]
    changed = case["after"] != case["before"] or "password" in case
    if case["type"] == "Group":
        assert member_ids(after) == expected_members(case)
        changed |= member_ids(after) != member_ids(before)
    assert (after["meta"]["version"] != before["meta"]["version"]) is changed
    if response.status_code == 200:
        assert response.headers["ETag"] == after["meta"]["version"]


def test_patch_that_changes_nothing_keeps_the_version(client: ScimClient) -> None:
    user = client.post("/scim/v2/Users", json={"userName": "same", "active": True, "emails": [
        {"value": "a@example.com", "type": "work"}]}).json
    group = client.post("/scim/v2/Groups", json={"displayName": "g", "members": [{"value": user["id"]}]}).json
    no_ops = {
        f"/scim/v2/Users/{user['id']}": [
            {"op": "replace", "path": "active", "value": "True"},
            {"op": "add", "path": "emails", "value": [{"value": "a@example.com", "type": "work"}]},
            {"op": "replace", "value": {"userName": "same", "id": "ignored"}}],
        f"/scim/v2/Groups/{group['id']}": [
            {"op": "add", "path": "members", "value": [{"value": user["id"]}]},
            {"op": "remove", "path": 'members[value eq "not-a-member"]'},
            {"op": "replace", "path": "displayName", "value": "g"}],
    }
    for url, operations in no_ops.items():
        version = client.get(url).json["meta"]["version"]
        response = client.patch(url, json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                           "Operations": operations})
        assert response.status_code in (200, 204), response.get_data(as_text=True)
        assert client.get(url).json["meta"]["version"] == version


def test_resending_the_same_password_keeps_the_version(client) -> None:  # type: ignore[no-untyped-def]
    """Okta's password sync may send the password it sent before: no real change, no new version."""
    from tests.conftest import patch_body

    created = client.post("/scim/v2/Users", json={"userName": "pw", "password": "s3cret-Pass"}).json
    uid, version = created["id"], created["meta"]["version"]
    same = client.patch(f"/scim/v2/Users/{uid}", json=patch_body({"op": "replace", "value": {"password": "s3cret-Pass"}}))
    assert same.status_code == 200 and same.json["meta"]["version"] == version
    assert "password" not in same.json
    changed = client.patch(f"/scim/v2/Users/{uid}", json=patch_body({"op": "replace", "path": "password",
                                                                      "value": "another-Pass"}))
    assert changed.json["meta"]["version"] != version
