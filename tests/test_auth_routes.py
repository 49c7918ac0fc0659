"""No route is open by mistake: every rule of scimd.app.URL_MAP is enumerated, so a route added
later is tested without anyone remembering to; each one outside PUBLIC_ENDPOINTS answers 401
to every kind of missing or wrong credential, the public ones answer without a token, the
Looking Glass API needs the token too, and neither tokens nor passwords reach any log."""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from scimd.app import PUBLIC_ENDPOINTS, URL_MAP
from scimd.schema import USER_URN
from tests.conftest import AUTH, PATCH_URN, TOKEN, Daemon, ScimClient, assert_scim_error, make_app

# A concrete value for each URL argument. A rule with an argument not listed here fails the
# collection of this module: add a value, do not skip the rule.
SAMPLE_ARGUMENTS = {"rid": "2819c223-7f76-453a-919d-413861904646", "name": "User", "urn": USER_URN}
WWW_AUTHENTICATE = 'Bearer realm="scimd"'
# Discovery and health hold no identity data (RFC 7644 §4). Changing this set is a security decision.
EXPECTED_PUBLIC = {"health", "service_provider_config", "resource_types", "resource_type", "schemas", "schema"}


def concrete_path(rule: Rule) -> str:
    return re.sub(r"<(?:[^>:]+:)?([^>]+)>", lambda match: SAMPLE_ARGUMENTS[match[1]], rule.rule)


ROUTES = [(rule.endpoint, method, concrete_path(rule))
          for rule in URL_MAP.iter_rules() for method in sorted(rule.methods or ())]
PROTECTED = [route for route in ROUTES if route[0] not in PUBLIC_ENDPOINTS]
PUBLIC = [route for route in ROUTES if route[0] in PUBLIC_ENDPOINTS]


def route_id(route: tuple[str, str, str]) -> str:
    return f"{route[1]} {route[2]}"


BAD_CREDENTIALS: dict[str, dict[str, str]] = {
    "no Authorization": {},
    "wrong token": {"Authorization": "Bearer not-the-token-0123456789"},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token with a suffix": {"Authorization": f"Bearer {TOKEN}x"},
    "Basic with the token as password": {"Authorization": "Basic " + base64.b64encode(f"scim:{TOKEN}".encode()).decode()},
    "Basic with the bare token": {"Authorization": f"Basic {TOKEN}"},
    "token without a scheme": {"Authorization": TOKEN},
    "empty Bearer": {"Authorization": "Bearer "},
    "Bearer alone": {"Authorization": "Bearer"},
}

BODY = orjson.dumps({"schemas": [PATCH_URN], "Operations": [], "userName": "intruder", "displayName": "intruders"})


def send(client: ScimClient, method: str, path: str, headers: dict[str, str], query: str = "") -> TestResponse:
    body = {"data": BODY, "content_type": "application/scim+json"} if method in ("POST", "PUT", "PATCH") else {}
    return client.open(path, method=method, headers=headers, auth=False, query_string=query, **body)


def assert_unauthorized(response: TestResponse, method: str) -> None:
    if method == "HEAD":
        assert response.status_code == 401
    else:
        assert_scim_error(response, 401)
    assert response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE


def assert_nothing_stored(client: ScimClient) -> None:
    for resource in ("Users", "Groups"):
        assert client.get(f"/scim/v2/{resource}").json["totalResults"] == 0


def test_every_route_is_enumerated() -> None:
    endpoints = {rule.endpoint for rule in URL_MAP.iter_rules()}
    assert PUBLIC_ENDPOINTS == EXPECTED_PUBLIC
    assert PUBLIC_ENDPOINTS <= endpoints, "PUBLIC_ENDPOINTS names an endpoint that does not exist"
    assert {route[0] for route in ROUTES} == endpoints
    assert len(PROTECTED) >= 20


@pytest.mark.parametrize(("endpoint", "method", "path"), ROUTES, ids=map(route_id, ROUTES))
def test_each_concrete_url_reaches_its_endpoint(endpoint: str, method: str, path: str) -> None:
    """Else the 401s below could come from some other rule than the one under test."""
    assert URL_MAP.bind("localhost").match(path, method=method)[0] == endpoint


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize(("endpoint", "method", "path"), PROTECTED, ids=map(route_id, PROTECTED))
def test_protected_routes_refuse_missing_or_wrong_credentials(client: ScimClient, endpoint: str, method: str,
                                                              path: str, credentials: dict[str, str]) -> None:
    assert_unauthorized(send(client, method, path, credentials), method)
    assert_nothing_stored(client)


@pytest.mark.parametrize(("endpoint", "method", "path"), PROTECTED, ids=map(route_id, PROTECTED))
def test_a_token_in_the_query_string_is_not_accepted(client: ScimClient, endpoint: str, method: str,
                                                     path: str) -> None:
    """RFC 6750 §2.3 allows it, scimd does not: URLs end up in logs and browser history."""
    assert_unauthorized(send(client, method, path, {}, query=f"access_token={TOKEN}"), method)


@pytest.mark.parametrize(("endpoint", "method", "path"), PROTECTED, ids=map(route_id, PROTECTED))
def test_protected_routes_answer_with_the_token(client: ScimClient, endpoint: str, method: str, path: str) -> None:
    response = send(client, method, path, AUTH)
    assert response.status_code not in (401, 403, 500), response.get_data(as_text=True)


@pytest.mark.parametrize(("endpoint", "method", "path"), PUBLIC, ids=map(route_id, PUBLIC))
def test_public_routes_answer_without_a_token(client: ScimClient, endpoint: str, method: str, path: str) -> None:
    response = send(client, method, path, {})
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("path", [
    "/scim/v2/Users/", "/scim/v2/users", "/SCIM/v2/Users", "//scim/v2/Users", "/scim//v2/Users", "/scim/v2/%55sers",
    "/scim/v2/Users;x", "/scim/v2/Users/../Users", "/health/../scim/v2/Users", "/scim/v2/ResourceTypes/../Users",
    "/scim/v2/Schemas/../../scim/v2/Users", "/scim/v2/Users/.search/", "/scim/v2/Bulk/", "/scim/v2/Users%2F",
])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_path_variants_never_reach_data_without_a_token(client: ScimClient, method: str, path: str) -> None:
    client.post("/scim/v2/Users", json={"userName": "secret-user"})
    response = send(client, method, path, {})
    assert response.status_code in (401, 404, 405), (response.status_code, response.get_data(as_text=True))
    assert b"secret-user" not in response.get_data()
    assert client.get("/scim/v2/Users").json["totalResults"] == 1


def test_a_cors_preflight_answers_without_a_token_but_runs_nothing(client: ScimClient) -> None:
    client.post("/scim/v2/Users", json={"userName": "secret-user"})
    response = client.open("/scim/v2/Users", method="OPTIONS", auth=False, headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "DELETE"})
    assert response.status_code == 204 and response.get_data() == b""
    assert client.get("/scim/v2/Users").json["totalResults"] == 1


# -- the Looking Glass ---------------------------------------------------------------------------

# The viewer's page, script and style hold no data (the token is typed into the page).
LOOKING_GLASS_ASSETS = {"/looking-glass", "/looking-glass/", "/looking-glass/looking-glass.js",
                        "/looking-glass/looking-glass.css"}
LOOKING_GLASS_API = [("GET", "/looking-glass/api/events"), ("HEAD", "/looking-glass/api/events"),
                     ("GET", "/looking-glass/api/stream"), ("POST", "/looking-glass/api/ticket")]


@pytest.fixture
def glass_client(tmp_path: Path) -> Iterator[ScimClient]:
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS="true")
    yield ScimClient(app)
    store.close()


def test_every_looking_glass_route_is_an_asset_or_needs_the_token(glass_client: ScimClient) -> None:
    routes = getattr(glass_client.application, "_routes", None)
    if routes is None:
        pytest.skip("the Looking Glass is not wired into the app (no route table)")
    assert set(routes) - LOOKING_GLASS_ASSETS == {path for _, path in LOOKING_GLASS_API}, (
        "a Looking Glass route was added: list it in LOOKING_GLASS_API (token) or LOOKING_GLASS_ASSETS (no data)")


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize(("method", "path"), LOOKING_GLASS_API, ids=[f"{m} {p}" for m, p in LOOKING_GLASS_API])
def test_the_looking_glass_api_needs_the_token(glass_client: ScimClient, method: str, path: str,
                                               credentials: dict[str, str]) -> None:
    glass_client.post("/scim/v2/Users", json={"userName": "watched-user"})
    response = glass_client.open(path, method=method, headers=credentials, auth=False)
    if response.status_code == 404:
        pytest.skip(f"{path} does not exist (yet)")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert b"watched-user" not in response.get_data()


def test_a_forged_stream_ticket_is_refused(glass_client: ScimClient) -> None:
    response = glass_client.get("/looking-glass/api/stream", query_string={"ticket": "1.forged"}, auth=False)
    if response.status_code == 404:
        pytest.skip("the Looking Glass stream does not exist (yet)")
    assert response.status_code == 401


@pytest.mark.parametrize("path", sorted(LOOKING_GLASS_ASSETS))
def test_the_looking_glass_assets_hold_no_data(glass_client: ScimClient, path: str) -> None:
    glass_client.post("/scim/v2/Users", json={"userName": "watched-user"})
    response = glass_client.get(path, auth=False)
    assert response.status_code in (200, 308)
    assert b"watched-user" not in response.get_data()


# -- secrets and logs ----------------------------------------------------------------------------

PASSWORDS = ("Pw-in-POST-1d8e77", "Pw-in-PATCH-5c2a90", "Pw-in-PUT-3f6b14", "Pw-in-bad-request-9e0c52",
             "Pw-in-Bulk-7a4d31")
WRONG_TOKEN = "wrong-but-secret-token-6b1f"


def exercise(request: Any) -> None:
    """Requests that carry the token (header, query), a wrong token, and passwords in every kind of
    write, including one that fails. `request(method, path, body, headers, query)` -> (status, body)."""
    status, user = request("POST", "/scim/v2/Users", {"userName": "pw-user", "password": PASSWORDS[0]}, AUTH, "")
    assert status == 201
    url = f"/scim/v2/Users/{user['id']}"
    assert request("PATCH", url, {"schemas": [PATCH_URN], "Operations": [
        {"op": "replace", "path": "password", "value": PASSWORDS[1]}]}, AUTH, "")[0] == 200
    assert request("PUT", url, {"userName": "pw-user", "password": PASSWORDS[2]}, AUTH, "")[0] == 200
    assert request("POST", "/scim/v2/Users", {"userName": 5, "password": PASSWORDS[3]}, AUTH, "")[0] == 400
    assert request("POST", "/scim/v2/Bulk", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                                             "Operations": [{"method": "POST", "path": "/Users", "bulkId": "b1",
                                                             "data": {"userName": "bulk-user",
                                                                      "password": PASSWORDS[4]}}]}, AUTH, "")[0] == 200
    assert request("GET", "/scim/v2/Users", None, {}, f"access_token={TOKEN}")[0] == 401
    assert request("GET", "/scim/v2/Users", None, {"Authorization": f"Bearer {WRONG_TOKEN}"}, "")[0] == 401
    assert request("GET", "/scim/v2/Users", None, AUTH, "filter=userName%20eq%20%22pw-user%22")[0] == 200


def assert_no_secret_in(text: str) -> None:
    for secret in (TOKEN, WRONG_TOKEN, *PASSWORDS):
        assert secret not in text, f"{secret!r} was written to the log"


def test_secrets_never_reach_the_logs_in_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS="true")
    client = ScimClient(app)

    def request(method: str, path: str, body: Any, headers: dict[str, str], query: str) -> tuple[int, Any]:
        response = client.open(path, method=method, headers=headers, auth=False, query_string=query,
                               **({"json": body} if body is not None else {}))
        return response.status_code, response.json

    caplog.set_level(logging.DEBUG)
    try:
        exercise(request)
        events = client.get("/looking-glass/api/events", query_string={"limit": 1000}).get_data(as_text=True)
    finally:
        store.close()
    assert any(record.name == "scimd.access" for record in caplog.records), "the access log was not captured"
    assert_no_secret_in(caplog.text)
    assert "pw-user" in events  # the Looking Glass did record these exchanges, redacted
    assert_no_secret_in(events)


@pytest.mark.slow
def test_secrets_never_reach_the_daemons_output(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data", SCIM_LOG_LEVEL="debug", SCIM_LOOKING_GLASS="true").start()
    try:
        def request(method: str, path: str, body: Any, headers: dict[str, str], query: str) -> tuple[int, Any]:
            status, _, document = daemon.request(method, path + (f"?{query}" if query else ""), body, token=None,
                                                 headers=headers)
            return status, document

        exercise(request)
        assert daemon.process is not None
        daemon.process.terminate()
        stdout, stderr = daemon.process.communicate(timeout=15)
    finally:
        daemon.stop()
    output = (stdout + stderr).decode("utf-8", "replace")
    assert '"status":201' in output, "the access log was not written"
    assert_no_secret_in(output)
