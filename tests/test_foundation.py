"""The HTTP foundation, in process: /health with a real database round trip, bearer auth, CORS
for configured origins only, every error under /scim/v2 a SCIM Error body (404, 405 with Allow,
400, 401, 413, 415, 500 revealing nothing), X-Request-Id on every response, accepted request
media types, the response media type, and the JSON access log line."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from werkzeug.test import EnvironBuilder

from scimd import __version__
from scimd.store import Store
from tests.conftest import AUTH, TOKEN, ScimClient, assert_scim_error, make_app, patch_body

SCIM_JSON = "application/scim+json; charset=utf-8"
ORIGIN = "https://admin.example.com"
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@pytest.fixture
def app_store(tmp_path: Path) -> Iterator[tuple[Any, Store]]:
    app, store = make_app(tmp_path, SHOWCASE_CORS_ORIGINS=f"{ORIGIN}, http://localhost:5173",
                          SCIM_MAX_BODY_BYTES="2048", SCIM_BULK_MAX_PAYLOAD="4096")
    yield app, store
    store.close()


@pytest.fixture
def client(app_store: tuple[Any, Store]) -> ScimClient:
    return ScimClient(app_store[0])


def new_user(client: ScimClient, name: str = "someone") -> dict[str, Any]:
    response = client.post("/scim/v2/Users", json={"userName": name})
    assert response.status_code == 201
    return response.json


# -- /health -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["no-token", "wrong-token"])
def test_health_is_ok_without_a_token(client: ScimClient, headers: dict[str, str]) -> None:
    response = client.get("/health", headers=headers, auth=False)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {"status": "ok", "version": __version__, "storage": "ok"}
    assert REQUEST_ID.fullmatch(response.headers["X-Request-Id"])


def test_health_is_503_when_the_database_fails(client: ScimClient, app_store: tuple[Any, Store]) -> None:
    """A real round trip: once the table it reads is gone, /health reports the failure."""
    _, store = app_store
    conn = sqlite3.connect(store.path)
    conn.execute("DROP TABLE settings")
    conn.commit()
    conn.close()
    response = client.get("/health", auth=False)
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "version": __version__, "storage": "failed"}


def test_health_is_503_once_the_store_is_closed(client: ScimClient, app_store: tuple[Any, Store]) -> None:
    app_store[1].close()
    response = client.get("/health", auth=False)
    assert response.status_code == 503 and response.json["status"] == "unavailable"


# -- auth ----------------------------------------------------------------------------------------


AUTHORIZATIONS = [
    (None, 401),
    ("", 401),
    (f"Bearer {TOKEN}", 200),
    (f"bearer {TOKEN}", 200),
    (f"BEARER {TOKEN}", 200),
    (f"Bearer   {TOKEN}  ", 200),
    ("Bearer", 401),
    ("Bearer ", 401),
    ("Bearer wrong-token", 401),
    (f"Bearer {TOKEN[:-1]}", 401),
    (f"Bearer {TOKEN}x", 401),
    (f"Bearer {TOKEN.upper()}", 401),
    (f"Token {TOKEN}", 401),
    (TOKEN, 401),
    ("Basic dGVzdDp0ZXN0", 401),
]


@pytest.mark.parametrize(("authorization", "status"), AUTHORIZATIONS,
                         ids=[repr(a) if a is None or TOKEN not in a else a.replace(TOKEN, "TOKEN")
                              for a, _ in AUTHORIZATIONS])
def test_bearer_token(client: ScimClient, authorization: str | None, status: int) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/scim/v2/Users", headers=headers, auth=False)
    if status == 200:
        assert response.status_code == 200
        assert "WWW-Authenticate" not in response.headers
    else:
        assert_scim_error(response, 401)
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="scimd"'
        assert response.content_type == SCIM_JSON


PROTECTED = [(method, f"/scim/v2/{kind}{suffix}") for kind in ("Users", "Groups")
             for method, suffix in (("GET", ""), ("POST", ""), ("POST", "/.search"), ("GET", "/some-id"),
                                    ("PUT", "/some-id"), ("PATCH", "/some-id"), ("DELETE", "/some-id"))]
PROTECTED += [("POST", "/scim/v2/.search"), ("POST", "/scim/v2/Bulk")]


@pytest.mark.parametrize(("method", "path"), PROTECTED, ids=[f"{m} {p}" for m, p in PROTECTED])
def test_every_resource_endpoint_needs_the_token(client: ScimClient, method: str, path: str) -> None:
    """The token is checked before anything else: no body parsing, no lookup of the id."""
    response = client.open(path, method=method, data=b"{not json", content_type="application/scim+json", auth=False)
    assert_scim_error(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="scimd"'


def test_auth_disabled_serves_without_a_token(tmp_path: Path) -> None:
    app, store = make_app(tmp_path, SCIM_API_TOKEN="")
    try:
        response = ScimClient(app).post("/scim/v2/Users", json={"userName": "open"}, auth=False)
        assert response.status_code == 201
    finally:
        store.close()


def test_every_token_of_the_file_and_the_environment_is_accepted(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# rotation in progress\nold-token\nnew-token\n")
    app, store = make_app(tmp_path, SCIM_API_TOKEN_FILE=str(token_file))
    try:
        client = ScimClient(app)
        for token in ("old-token", "new-token", TOKEN):
            assert client.get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert_scim_error(client.get("/scim/v2/Users", headers={"Authorization": "Bearer # rotation in progress"}),
                          401)
    finally:
        store.close()


# -- CORS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/scim/v2/Users", "/scim/v2/Users/some-id", "/scim/v2/ServiceProviderConfig"])
@pytest.mark.parametrize("origin", [ORIGIN, "http://localhost:5173"])
def test_preflight_from_a_configured_origin(client: ScimClient, path: str, origin: str) -> None:
    response = client.options(path, auth=False, headers={
        "Origin": origin, "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization, content-type, if-match"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == origin
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "if-none-match"} <= allowed
    assert "Origin" in response.headers.get_all("Vary")
    assert REQUEST_ID.fullmatch(response.headers["X-Request-Id"])


@pytest.mark.parametrize("origin", ["https://evil.example", "https://admin.example.com.evil.example", "null",
                                    "http://localhost:3000", "HTTPS://ADMIN.EXAMPLE.COM"])
def test_other_origins_get_no_cors_headers(client: ScimClient, origin: str) -> None:
    preflight = client.options("/scim/v2/Users", auth=False,
                               headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    actual = client.get("/scim/v2/Users", headers={"Origin": origin})
    for response in (preflight, actual):
        assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-")]
    assert actual.status_code == 200


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/scim/v2/Users", 200), ("POST", "/scim/v2/Users", 201), ("GET", "/scim/v2/Users/nope", 404),
    ("GET", "/scim/v2/ServiceProviderConfig", 200),
], ids=["list", "create", "error", "discovery"])
def test_responses_to_a_configured_origin_expose_etag_and_location(client: ScimClient, method: str, path: str,
                                                                   status: int) -> None:
    response = client.open(path, method=method, headers={"Origin": ORIGIN},
                           **({"json": {"userName": "cors"}} if method == "POST" else {}))
    assert response.status_code == status
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"etag", "location"} <= exposed


def test_unauthenticated_response_to_a_configured_origin_is_readable(client: ScimClient) -> None:
    response = client.get("/scim/v2/Users", headers={"Origin": ORIGIN}, auth=False)
    assert_scim_error(response, 401)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "www-authenticate" in response.headers["Access-Control-Expose-Headers"].lower()


# -- every error is a SCIM error -----------------------------------------------------------------


ERRORS: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    ("unknown-route", "GET", "/scim/v2/Nope", {}, 404, None),
    ("unknown-nested-route", "GET", "/scim/v2/Users/some-id/extra", {}, 404, None),
    ("unknown-id", "GET", "/scim/v2/Users/some-id", {}, 404, None),
    ("route-case", "GET", "/scim/v2/users", {}, 404, None),
    ("malformed-json", "POST", "/scim/v2/Users", {"data": b'{"userName": '}, 400, "invalidSyntax"),
    ("trailing-garbage", "POST", "/scim/v2/Users", {"data": b'{"userName": "a"} x'}, 400, "invalidSyntax"),
    ("empty-body", "POST", "/scim/v2/Users", {"data": b""}, 400, "invalidSyntax"),
    ("not-utf8", "POST", "/scim/v2/Users", {"data": b'{"userName": "\xff"}'}, 400, "invalidSyntax"),
    ("malformed-patch", "PATCH", "/scim/v2/Groups/some-id", {"data": b"["}, 400, "invalidSyntax"),
    ("text-plain", "POST", "/scim/v2/Users", {"data": b'{"userName": "a"}', "content_type": "text/plain"}, 415, None),
    ("form", "POST", "/scim/v2/Users",
     {"data": b"userName=a", "content_type": "application/x-www-form-urlencoded"}, 415, None),
    ("xml", "PUT", "/scim/v2/Users/some-id", {"data": b"<user/>", "content_type": "application/xml"}, 415, None),
    ("no-content-type", "POST", "/scim/v2/Users", {"data": b'{"userName": "a"}', "content_type": None}, 415, None),
    ("too-large", "POST", "/scim/v2/Users", {"data": b'{"userName": "%s"}' % (b"a" * 3000)}, 413, None),
    ("bulk-too-large", "POST", "/scim/v2/Bulk", {"data": b"[" + b" " * 5000 + b"]"}, 413, None),
    ("bad-filter", "GET", '/scim/v2/Users?filter=userName eq', {}, 400, "invalidFilter"),
    ("bad-count", "GET", "/scim/v2/Groups?count=many", {}, 400, "invalidValue"),
]


@pytest.mark.parametrize(("method", "path", "request_kwargs", "status", "scim_type"),
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_are_scim_errors(client: ScimClient, method: str, path: str, request_kwargs: dict[str, Any],
                                status: int, scim_type: str | None) -> None:
    kwargs = {"content_type": "application/scim+json", **request_kwargs}
    if kwargs["content_type"] is None:
        del kwargs["content_type"]
    response = client.open(path, method=method, **kwargs)
    assert_scim_error(response, status, scim_type)
    assert response.content_type == SCIM_JSON
    assert REQUEST_ID.fullmatch(response.headers["X-Request-Id"])


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/scim/v2/Users", {"GET", "HEAD", "POST"}),
    ("PUT", "/scim/v2/Groups", {"GET", "HEAD", "POST"}),
    ("POST", "/scim/v2/Users/some-id", {"GET", "HEAD", "PUT", "PATCH", "DELETE"}),
    ("PUT", "/scim/v2/ServiceProviderConfig", {"GET", "HEAD"}),
    ("DELETE", "/scim/v2/Schemas", {"GET", "HEAD"}),
    ("GET", "/scim/v2/Bulk", {"POST"}),
    ("GET", "/scim/v2/.search", {"POST"}),
    ("POST", "/health", {"GET", "HEAD"}),
], ids=["delete-users", "put-groups", "post-user", "put-spc", "delete-schemas", "get-bulk", "get-search",
        "post-health"])
def test_wrong_method_is_405_with_allow(client: ScimClient, method: str, path: str, allowed: set[str]) -> None:
    response = client.open(path, method=method, json={})
    assert_scim_error(response, 405)
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed


SECRET = "/srv/scimd/internal/path.py line 42 SELECT secret FROM resources"


def test_a_bug_is_a_500_that_reveals_nothing(client: ScimClient, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    someone = new_user(client)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(SECRET)

    monkeypatch.setattr("scimd.directory.render", broken)
    with caplog.at_level(logging.ERROR, logger="scimd"):
        response = client.get(f"/scim/v2/Users/{someone['id']}", headers={"X-Request-Id": "req-500-abc"})
    body = assert_scim_error(response, 500)
    text = response.get_data(as_text=True)
    for leak in ("RuntimeError", "Traceback", "SELECT", "/srv/", "render", "line 42"):
        assert leak not in text
    assert "req-500-abc" in body["detail"] and response.headers["X-Request-Id"] == "req-500-abc"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "req-500-abc" in record.getMessage()
    assert record.exc_info is not None and SECRET in str(record.exc_info[1])


# -- request ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "headers", "status"), [
    ("GET", "/health", {}, 200),
    ("GET", "/scim/v2/Schemas", {}, 200),
    ("GET", "/scim/v2/Users", {}, 200),
    ("GET", "/scim/v2/Users", {"Authorization": "Bearer nope"}, 401),
    ("GET", "/scim/v2/Nope", {}, 404),
    ("DELETE", "/scim/v2/Users", {}, 405),
    ("OPTIONS", "/scim/v2/Users", {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}, 204),
    ("HEAD", "/scim/v2/Users", {}, 200),
], ids=["health", "discovery", "list", "401", "404", "405", "preflight", "head"])
def test_every_response_has_a_request_id(client: ScimClient, method: str, path: str, headers: dict[str, str],
                                         status: int) -> None:
    response = client.open(path, method=method, headers=headers)
    assert response.status_code == status
    assert REQUEST_ID.fullmatch(response.headers["X-Request-Id"])
    again = client.open(path, method=method, headers=headers)
    assert again.headers["X-Request-Id"] != response.headers["X-Request-Id"]


def test_write_responses_have_a_request_id(client: ScimClient) -> None:
    created = client.post("/scim/v2/Users", json={"userName": "rid"})
    cached = client.get(f"/scim/v2/Users/{created.json['id']}", headers={"If-None-Match": created.headers["ETag"]})
    deleted = client.delete(f"/scim/v2/Users/{created.json['id']}")
    assert [r.status_code for r in (created, cached, deleted)] == [201, 304, 204]
    assert all(REQUEST_ID.fullmatch(r.headers["X-Request-Id"]) for r in (created, cached, deleted))


@pytest.mark.parametrize(("sent", "echoed"), [
    ("abc-123", True), ("8c1f2a0e-3b6d-4c52-9a1e-0f7d2b3c4d5e", True), ("trace:span.1_2", True),
    ("a" * 64, True), ("a" * 65, False), ("has space", False), ("tab\there", False), ("<script>", False), ("", False),
], ids=["simple", "uuid", "punctuation", "64-chars", "65-chars", "space", "tab", "markup", "empty"])
def test_a_safe_client_request_id_is_echoed(client: ScimClient, sent: str, echoed: bool) -> None:
    response = client.get("/scim/v2/Users", headers={"X-Request-Id": sent})
    assert (response.headers["X-Request-Id"] == sent) is echoed
    assert REQUEST_ID.fullmatch(response.headers["X-Request-Id"])


# -- media types ---------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "application/scim+json", "application/json", "application/scim+json; charset=utf-8",
    "application/json;charset=UTF-8", "application/json; charset=ISO-8859-1",
    "application/scim+json; charset=\"utf-8\"",
    "Application/SCIM+JSON",
])
def test_json_request_bodies_are_accepted_with_any_charset(client: ScimClient, content_type: str) -> None:
    response = client.post("/scim/v2/Users", data=b'{"userName": "typed"}', content_type=content_type)
    assert response.status_code == 201, response.get_data(as_text=True)
    replaced = client.put(f"/scim/v2/Users/{response.json['id']}", data=b'{"userName": "retyped"}',
                          content_type=content_type)
    assert replaced.status_code == 200
    patched = client.patch(f"/scim/v2/Users/{response.json['id']}", data=orjson.dumps(
        patch_body({"op": "replace", "path": "title", "value": "t"})), content_type=content_type)
    assert patched.status_code == 200


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/scim/v2/Users"), ("GET", "/scim/v2/Users/{id}"), ("POST", "/scim/v2/Users"),
    ("PUT", "/scim/v2/Users/{id}"),
    ("POST", "/scim/v2/.search"), ("GET", "/scim/v2/ServiceProviderConfig"), ("GET", "/scim/v2/Nope"),
], ids=["list", "get", "post", "put", "search", "discovery", "error"])
def test_scim_responses_are_scim_json_utf8(client: ScimClient, method: str, path: str) -> None:
    someone = new_user(client)
    body = {"POST": {"userName": "another"}, "PUT": {"userName": "someone"}}.get(method)
    if path.endswith(".search"):
        body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}
    response = client.open(path.format(id=someone["id"]), method=method, **({"json": body} if body else {}))
    assert response.headers["Content-Type"] == SCIM_JSON


def test_non_ascii_round_trips_as_utf8(client: ScimClient) -> None:
    created = client.post("/scim/v2/Users", data='{"userName": "Ærøskøbing-名前"}'.encode(),
                          content_type="application/scim+json")
    assert created.status_code == 201
    assert created.get_data().decode("utf-8").count("Ærøskøbing-名前") == 1


# -- the access log ------------------------------------------------------------------------------


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "scimd.access"]


def test_one_json_access_line_per_request(client: ScimClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scimd.access")
    body = {"userName": "logged", "password": "hunter2-in-the-body"}
    responses = [
        client.post("/scim/v2/Users?attributes=userName", json=body, headers={"User-Agent": "Okta SCIM Client 1.0"}),
        client.get("/scim/v2/Users", auth=False),
        client.get("/health", auth=False),
    ]
    lines = access_lines(caplog)
    assert len(lines) == len(responses)
    for line, response in zip(lines, responses):
        assert set(line) == {"time", "request_id", "method", "path", "status", "duration_ms", "client", "user_agent"}
        assert line["request_id"] == response.headers["X-Request-Id"]
        assert line["status"] == response.status_code
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", line["time"])
        assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    assert lines[0]["method"] == "POST" and lines[0]["path"] == "/scim/v2/Users?attributes=userName"
    assert lines[0]["user_agent"] == "Okta SCIM Client 1.0"  # `client` is checked on the real daemon
    assert (lines[1]["status"], lines[2]["path"]) == (401, "/health")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and "Bearer" not in logged and "hunter2" not in logged


@pytest.mark.parametrize("looking_glass", ["true", "false"])
def test_the_access_line_is_written_once_the_server_closes_the_response(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, looking_glass: str) -> None:
    """After the client has its answer (waitress sends the body before it calls close()), once."""
    caplog.set_level(logging.INFO, logger="scimd.access")
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS=looking_glass)
    try:
        environ = EnvironBuilder(path="/health").get_environ()
        result = app(environ, lambda status, headers, exc_info=None: None)
        assert orjson.loads(b"".join(result))["status"] == "ok"
        assert access_lines(caplog) == []
        result.close()
        result.close()
        [line] = access_lines(caplog)
        assert (line["path"], line["status"]) == ("/health", 200)
    finally:
        store.close()


@pytest.mark.parametrize(("query", "logged"), [
    ("token=abc123", "token=[redacted]"),
    ("filter=x&access_token=abc123&count=1", "filter=x&access_token=[redacted]&count=1"),
    ("PASSWORD=abc123", "PASSWORD=[redacted]"),
    ("api_key=abc123", "api_key=[redacted]"),
    ("ticket=abc123", "ticket=[redacted]"),
], ids=["token", "access_token", "password", "api_key", "ticket"])
def test_query_secrets_are_not_logged(client: ScimClient, caplog: pytest.LogCaptureFixture, query: str,
                                      logged: str) -> None:
    caplog.set_level(logging.INFO, logger="scimd.access")
    client.get(f"/scim/v2/Schemas?{query}")
    [line] = access_lines(caplog)
    assert line["path"] == f"/scim/v2/Schemas?{logged}"
    assert "abc123" not in caplog.text


def test_authorization_is_never_logged_even_at_debug(client: ScimClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/scim/v2/Users", json={"userName": "debug", "password": "body-secret-pw"}, headers=AUTH)
    client.get("/scim/v2/Users", headers={"Authorization": "Bearer wrong-secret-token"}, auth=False)
    assert TOKEN not in caplog.text and "wrong-secret-token" not in caplog.text and "body-secret-pw" not in caplog.text
    assert len(access_lines(caplog)) == 2
