"""Bulk (RFC 7644 §3.7): the RFC examples as data, bulkId references, failOnErrors, versions,
limits and atomicity per operation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ScimClient, assert_scim_error, make_app

DATA = Path(__file__).parent / "data" / "bulk"
BULK_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def load(name: str, **ids: str) -> dict[str, Any]:
    text = (DATA / name).read_text()
    for key, value in ids.items():
        text = text.replace("{" + key + "}", value)
    return json.loads(text)


def bulk(*operations: dict[str, Any], fail_on_errors: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [BULK_URN], "Operations": list(operations)}
    if fail_on_errors is not None:
        body["failOnErrors"] = fail_on_errors
    return body


def post_user(bulk_id: str, user_name: str, **extra: Any) -> dict[str, Any]:
    return {"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": {"userName": user_name, **extra}}


def create_user(client: ScimClient, user_name: str) -> str:
    response = client.post("/scim/v2/Users", json={"userName": user_name})
    assert response.status_code == 201
    return response.json["id"]


def statuses(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"]
    return [result["status"] for result in response.json["Operations"]]


def test_rfc_example_request_gets_the_rfc_example_statuses(client: ScimClient) -> None:
    ids = {name: create_user(client, name) for name in ("user1", "user2", "user3")}
    response = client.post("/scim/v2/Bulk", json=load("rfc7644-3.7.2-bulk-request.json", **ids))
    expected = load("rfc7644-3.7.2-bulk-response.json")["Operations"]
    results = response.json["Operations"]
    assert [(r["method"], r.get("bulkId"), r["status"]) for r in results] == [
        (e["method"], e.get("bulkId"), e["status"]) for e in expected]
    created = results[0]
    assert created["location"].startswith("http://localhost:8080/scim/v2/Users/")
    assert created["version"] == 'W/"1"'
    assert results[1]["version"] == 'W/"2"'
    assert client.get(f"/scim/v2/Users/{ids['user1']}").json["userName"] == "Bob"
    assert client.get(f"/scim/v2/Users/{ids['user2']}").json["nickName"] == "Babs"
    assert client.get(f"/scim/v2/Users/{ids['user3']}").status_code == 404


def test_forward_reference_is_created_first_and_resolved(client: ScimClient) -> None:
    response = client.post("/scim/v2/Bulk", json=load("rfc7644-3.7.1-forward-reference.json"))
    results = {r["bulkId"]: r for r in response.json["Operations"]}
    assert {k: r["status"] for k, r in results.items()} == {"qwerty": "201", "ytrewq": "201"}
    user_id = results["qwerty"]["location"].rsplit("/", 1)[1]
    group = client.get(results["ytrewq"]["location"].removeprefix("http://localhost:8080")).json
    assert [m["value"] for m in group["members"]] == [user_id]
    # Dependencies run first: the user's result precedes the group's.
    assert [r["bulkId"] for r in response.json["Operations"]] == ["qwerty", "ytrewq"]


def test_circular_references_fail_with_409_and_create_nothing(client: ScimClient) -> None:
    response = client.post("/scim/v2/Bulk", json=load("rfc7644-3.7.1-circular.json"))
    assert statuses(response) == ["409", "409"]
    for result in response.json["Operations"]:
        assert result["response"]["status"] == "409"
        assert "bulkId" in result["response"]["detail"]
    assert client.get("/scim/v2/Groups").json["totalResults"] == 0


def test_reference_in_path_and_in_enterprise_manager(client: ScimClient) -> None:
    enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
    response = client.post("/scim/v2/Bulk", json=bulk(
        post_user("report", "report", **{enterprise: {"manager": {"value": "bulkId:boss"}}}),
        post_user("boss", "boss"),
        {"method": "PATCH", "path": "/Users/bulkId:boss",
         "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                  "Operations": [{"op": "replace", "path": "title", "value": "Chief"}]}},
    ))
    assert statuses(response) == ["201", "201", "200"]
    by_id = {r.get("bulkId"): r for r in response.json["Operations"]}
    boss_id = by_id["boss"]["location"].rsplit("/", 1)[1]
    report = client.get(by_id["report"]["location"].removeprefix("http://localhost:8080")).json
    assert report[enterprise]["manager"]["value"] == boss_id
    assert client.get(f"/scim/v2/Users/{boss_id}").json["title"] == "Chief"


def test_a_failed_operation_fails_its_dependants(client: ScimClient) -> None:
    create_user(client, "taken")
    response = client.post("/scim/v2/Bulk", json=bulk(
        post_user("dup", "taken"),
        {"method": "POST", "path": "/Groups", "bulkId": "g",
         "data": {"displayName": "G", "members": [{"value": "bulkId:dup"}]}},
    ))
    assert statuses(response) == ["409", "400"]
    assert "dup" in response.json["Operations"][1]["response"]["detail"]


def test_unknown_bulk_id_reference_is_an_error_for_that_operation(client: ScimClient) -> None:
    response = client.post("/scim/v2/Bulk", json=bulk(
        {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {"displayName": "G",
                                                                       "members": [{"value": "bulkId:nobody"}]}},
        post_user("ok", "ok")))
    assert statuses(response) == ["409", "201"]


def test_fail_on_errors_stops_after_that_many_errors(client: ScimClient) -> None:
    create_user(client, "a")
    response = client.post("/scim/v2/Bulk", json=bulk(
        post_user("1", "a"), post_user("2", "b"), post_user("3", "a"), post_user("4", "c"), fail_on_errors=2))
    assert statuses(response) == ["409", "201", "409"]
    names = sorted(r["userName"] for r in client.get("/scim/v2/Users").json["Resources"])
    assert names == ["a", "b"]


def test_mixed_success_and_failure_each_operation_atomic(client: ScimClient) -> None:
    user = create_user(client, "keep")
    response = client.post("/scim/v2/Bulk", json=bulk(
        {"method": "PATCH", "path": f"/Users/{user}",
         "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                  "Operations": [{"op": "replace", "path": "title", "value": "changed"},
                                 {"op": "replace", "path": "id", "value": "nope"}]}},
        post_user("x", "x"),
        {"method": "DELETE", "path": "/Users/does-not-exist"},
        {"method": "GET", "path": "/Users"},
        {"method": "POST", "path": "/Users", "data": {"userName": "no-bulk-id"}},
        {"method": "POST", "path": "/Nope", "bulkId": "n", "data": {}},
    ))
    assert statuses(response) == ["400", "201", "404", "400", "400", "400"]
    failed_patch = response.json["Operations"][0]["response"]
    assert failed_patch["scimType"] == "mutability"
    after = client.get(f"/scim/v2/Users/{user}").json
    assert "title" not in after and after["meta"]["version"] == 'W/"1"'


@pytest.mark.parametrize(("version", "status"), [('W/"1"', "200"), ('W/"7"', "412"), ('"1"', "200"), ("*", "200")])
def test_version_acts_as_if_match(client: ScimClient, version: str, status: str) -> None:
    user = create_user(client, "v")
    response = client.post("/scim/v2/Bulk", json=bulk(
        {"method": "PUT", "path": f"/Users/{user}", "version": version, "data": {"userName": "v2"}}))
    assert statuses(response) == [status]
    if status == "412":
        assert response.json["Operations"][0]["response"]["scimType"] == "invalidVers"


def test_too_many_operations_is_413(tmp_path: Path) -> None:
    app, store = make_app(tmp_path, SCIM_BULK_MAX_OPERATIONS="3")
    try:
        client = ScimClient(app)
        response = client.post("/scim/v2/Bulk", json=bulk(*(post_user(str(i), f"u{i}") for i in range(4))))
        assert_scim_error(response, 413)
        assert client.get("/scim/v2/Users").json["totalResults"] == 0
        spc = client.get("/scim/v2/ServiceProviderConfig").json["bulk"]
        assert spc == {"supported": True, "maxOperations": 3, "maxPayloadSize": 1048576}
    finally:
        store.close()


def test_payload_over_the_limit_is_refused_from_content_length(tmp_path: Path) -> None:
    app, store = make_app(tmp_path, SCIM_BULK_MAX_PAYLOAD="2048")
    try:
        client = ScimClient(app)
        body = orjson.dumps(bulk(post_user("1", "x" * 3000)))
        response = client.post("/scim/v2/Bulk", data=body, content_type="application/scim+json")
        assert_scim_error(response, 413)
        # The declared length alone decides: a lying Content-Length with no body is refused too.
        response = client.post("/scim/v2/Bulk", data=b"", content_type="application/scim+json",
                               environ_overrides={"CONTENT_LENGTH": "999999"})
        assert_scim_error(response, 413)
    finally:
        store.close()


@pytest.mark.parametrize("body", [
    [], {"Operations": []}, {"schemas": [BULK_URN]}, {"schemas": [BULK_URN], "Operations": {}},
    {"schemas": [BULK_URN], "Operations": [], "failOnErrors": 0},
    {"schemas": [BULK_URN], "Operations": ["x"]},
], ids=["array", "no-schemas", "no-operations", "operations-object", "fail-on-errors-zero", "operation-string"])
def test_malformed_bulk_requests_are_400(client: ScimClient, body: Any) -> None:
    assert_scim_error(client.post("/scim/v2/Bulk", json=body), 400)


def test_thousand_creates_in_one_request(client: ScimClient) -> None:
    response = client.post("/scim/v2/Bulk", json=bulk(*(post_user(str(i), f"bulk{i}") for i in range(1000))))
    assert statuses(response) == ["201"] * 1000
    assert client.get("/scim/v2/Users?count=0").json["totalResults"] == 1000
