"""Hostile input never breaks scimd: a corpus of malformed and malicious requests
(tests/data/hostile/requests.json, plus generated giants) is sent in-process and to the real
daemon; each is answered with its SCIM error (a 4xx, never a 5xx) and leaves the stored data
byte-identical (every table read straight from the database file before and after). Requests
that only the wire can carry (raw bytes in the request line, oversized headers, smuggling
attempts) go to the daemon alone."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest

from tests.conftest import AUTH, ERROR_URN, PATCH_URN, TOKEN, Daemon, ScimClient, make_app
from tests.test_limits import parse_response, raw_exchange

CORPUS_FILE = Path(__file__).parent / "data" / "hostile" / "requests.json"
MAX_BODY = 1_048_576  # the default SCIM_MAX_BODY_BYTES
SEARCH_URN = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _generated() -> list[dict[str, Any]]:
    """Cases too big to write down: deep nesting, huge strings, arrays and filters."""
    deep = "[" * 20_000 + "]" * 20_000
    ors = " or ".join(["userName pr"] * 10_000)
    many_terms = " or ".join(["x pr"] * 1_000)  # under MAX_LENGTH, over MAX_TERMS
    parens = "(" * 3_000 + "userName pr" + ")" * 3_000
    nots = "not (" * 2_000 + "userName pr" + ")" * 2_000
    patch = {"schemas": [PATCH_URN]}
    search = {"schemas": [SEARCH_URN]}
    return [
        {"id": "gen-nesting-20000-body", "method": "POST", "path": "/scim/v2/Users", "raw": deep,
         "status": 400, "scimType": "invalidSyntax"},
        {"id": "gen-nesting-20000-in-attribute", "method": "POST", "path": "/scim/v2/Users",
         "raw": f'{{"userName": "deep", "title": {deep}}}', "status": 400, "scimType": "invalidSyntax"},
        {"id": "gen-nesting-20000-object", "method": "PUT", "path": "/scim/v2/Users/{user}",
         "raw": '{"a":' * 20_000 + "1" + "}" * 20_000, "status": 400, "scimType": "invalidSyntax"},
        {"id": "gen-nesting-20000-patch-value", "method": "PATCH", "path": "/scim/v2/Users/{user}",
         "raw": f'{{"schemas": ["{PATCH_URN}"], "Operations": [{{"op": "add", "path": "title", "value": {deep}}}]}}',
         "status": 400, "scimType": "invalidSyntax"},
        {"id": "gen-body-over-limit", "method": "POST", "path": "/scim/v2/Users",
         "json": {"userName": "x" * (MAX_BODY + 10)}, "status": 413},
        {"id": "gen-bulk-over-limit", "method": "POST", "path": "/scim/v2/Bulk",
         "json": {"Operations": [{"method": "DELETE", "path": "/Users/{user}", "pad": "x" * MAX_BODY}]}, "status": 413},
        {"id": "gen-100000-members-numbers", "method": "POST", "path": "/scim/v2/Groups",
         "json": {"displayName": "huge", "members": [5] * 100_000}, "status": 400, "scimType": "invalidValue"},
        {"id": "gen-20000-unknown-members", "method": "PATCH", "path": "/scim/v2/Groups/{group}",
         "json": {**patch, "Operations": [{"op": "add", "path": "members",
                                           "value": [{"value": f"missing-{i}"} for i in range(20_000)]}]},
         "status": 400, "scimType": "invalidValue"},
        {"id": "gen-15000-operations-last-bad", "method": "PATCH", "path": "/scim/v2/Users/{user}",
         "json": {**patch, "Operations": [{"op": "replace", "path": "title", "value": f"t{i}"} for i in range(15_000)]
                  + [{"op": "replace", "path": "active", "value": 5}]}, "status": 400, "scimType": "invalidValue"},
        {"id": "gen-100000-emails-one-bad", "method": "POST", "path": "/scim/v2/Users",
         "json": {"userName": "many", "emails": [{"value": f"{i}@x"} for i in range(40_000)] + [{"value": 1}]},
         "status": 400, "scimType": "invalidValue"},
        {"id": "gen-patch-path-100kb", "method": "PATCH", "path": "/scim/v2/Users/{user}",
         "json": {**patch, "Operations": [{"op": "replace", "path": "a" * 100_000, "value": "x"}]},
         "status": 400, "scimType": "invalidPath"},
        {"id": "gen-filter-50kb-get", "method": "GET", "path": "/scim/v2/Users?filter=userName%20eq%20%22"
         + "x" * 50_000 + "%22", "status": 400, "scimType": "invalidFilter"},
        {"id": "gen-filter-100kb-search", "method": "POST", "path": "/scim/v2/.search",
         "json": {**search, "filter": f'userName eq "{"x" * 100_000}"'}, "status": 400, "scimType": "invalidFilter"},
        {"id": "gen-filter-10000-ors", "method": "POST", "path": "/scim/v2/Users/.search",
         "json": {**search, "filter": ors}, "status": 400, "scimType": "invalidFilter"},
        {"id": "gen-filter-1000-terms", "method": "POST", "path": "/scim/v2/Users/.search",
         "json": {**search, "filter": many_terms}, "status": 400, "scimType": "invalidFilter"},
        {"id": "gen-filter-3000-parens", "method": "POST", "path": "/scim/v2/Groups/.search",
         "json": {**search, "filter": parens}, "status": 400, "scimType": "invalidFilter"},
        {"id": "gen-filter-2000-nots", "method": "POST", "path": "/scim/v2/.search",
         "json": {**search, "filter": nots}, "status": 400, "scimType": "invalidFilter"},
        {"id": "gen-filter-3000-brackets", "method": "POST", "path": "/scim/v2/Users/.search",
         "json": {**search, "filter": "emails[" * 3_000 + "value pr" + "]" * 3_000},
         "status": 400, "scimType": "invalidFilter"},
        {"id": "gen-filter-deep-parens-get", "method": "GET",
         "path": "/scim/v2/Users?filter=" + "%28" * 1_000 + "userName%20pr" + "%29" * 1_000,
         "status": 400, "scimType": "invalidFilter"},
    ]


CASES: list[dict[str, Any]] = json.loads(CORPUS_FILE.read_text())["cases"] + _generated()


# -- the seeded directory and its snapshot --------------------------------------------------------

Send = Callable[[str, str, bytes, dict[str, str]], tuple[int, dict[str, str], bytes]]


def seed(send: Send) -> dict[str, str]:
    """Two users (one with a password) and a group holding one of them."""
    def create(path: str, document: dict[str, Any]) -> str:
        status, _, body = send("POST", path, orjson.dumps(document), {"Content-Type": "application/scim+json", **AUTH})
        assert status == 201, body
        return str(orjson.loads(body)["id"])

    user = create("/scim/v2/Users", {"userName": "seed-user", "title": "seed", "password": "Seed-Pass-1",
                                     "emails": [{"value": "seed@example.com", "type": "work", "primary": True}]})
    create("/scim/v2/Users", {"userName": "other-user"})
    group = create("/scim/v2/Groups", {"displayName": "seed-group", "members": [{"value": user}]})
    return {"user": user, "group": group}


def snapshot(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read from the file itself (versions, password hashes and index
    rows included): what the daemon would serve after a restart."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {table: conn.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2').fetchall() for table in tables}
    finally:
        conn.close()


def materialize(case: dict[str, Any], ids: dict[str, str]) -> tuple[str, str, bytes, dict[str, str]]:
    def fill(text: str) -> str:
        return text.replace("{user}", ids["user"]).replace("{group}", ids["group"])

    headers = dict(AUTH) if case.get("auth", True) else {}
    headers.update({name: fill(value) for name, value in case.get("headers", {}).items()})
    if "raw" in case:
        body = fill(case["raw"]).encode("latin-1")
    elif "json" in case:
        body = fill(orjson.dumps(case["json"]).decode()).encode()
    else:
        body = b""
    content_type = case.get("contentType", "application/scim+json")
    if ("raw" in case or "json" in case) and content_type:
        headers["Content-Type"] = content_type
    return case["method"], fill(case["path"]), body, headers


def check(case: dict[str, Any], status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == case["status"], (status, body[:300])
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/scim+json"), headers
        error = orjson.loads(body)
        assert error["schemas"] == [ERROR_URN] and error["status"] == str(status) and error["detail"]
        if "scimType" in case:
            assert error.get("scimType") == case["scimType"], error


# -- in-process ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Send, dict[str, str], Path]]:
    """One app for the whole corpus: every case must leave it as seeded, and seeding (a password
    hash) is the slow part."""
    data = tmp_path_factory.mktemp("hostile-in-process")
    app, store = make_app(data)
    client = ScimClient(app)

    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        response = client.open(path, method=method, data=body, headers=headers, auth=False)
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.get_data()

    try:
        yield send, seed(send), data / "scim.db"
    finally:
        store.close()


IN_PROCESS = [case for case in CASES if not case.get("wireOnly")]


@pytest.mark.parametrize("case", IN_PROCESS, ids=[case["id"] for case in IN_PROCESS])
def test_hostile_request_in_process(in_process: tuple[Send, dict[str, str], Path], case: dict[str, Any]) -> None:
    send, ids, database = in_process
    before = snapshot(database)
    started = time.monotonic()
    status, headers, body = send(*materialize(case, ids))
    assert time.monotonic() - started < 5
    check(case, status, headers, body)
    assert snapshot(database) == before


# -- the real daemon ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, str], Path]]:
    data = tmp_path_factory.mktemp("hostile") / "data"
    daemon = Daemon(data).start()
    try:
        yield daemon, seed(_wire_sender(daemon)), data / "scim.db"
    finally:
        daemon.stop()


def _wire_sender(daemon: Daemon) -> Send:
    def send(method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        if body or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(body)}\r\n"
        raw = raw_exchange(daemon.port, head.encode("latin-1") + b"\r\n" + body, timeout=10)
        return parse_response(raw)
    return send


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_hostile_request_to_the_daemon(served: tuple[Daemon, dict[str, str], Path], case: dict[str, Any]) -> None:
    daemon, ids, database = served
    before = snapshot(database)
    status, headers, body = _wire_sender(daemon)(*materialize(case, ids))
    check({**case, **case.get("wire", {})}, status, headers, body)
    assert snapshot(database) == before
    assert daemon.process is not None and daemon.process.poll() is None


def _head(method: str = "GET", path: str = "/scim/v2/Users") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n".encode()


# Raw requests only the wire can carry, and the status each gets (with a SCIM Error body).
WIRE_CASES: dict[str, tuple[bytes, int]] = {
    "request-line-nul": (_head(path="/scim/v2/Users/a\x00b") + b"\r\n", 404),
    "request-line-raw-bytes": (_head(path="/scim/v2/Users/\xc3\xa4\xff") + b"\r\n", 400),
    "request-line-garbage": (b"GARBAGE\r\n\r\n", 400),
    "request-line-unknown-version-still-needs-the-token": (b"GET /scim/v2/Users HTTP/9.9\r\nHost: x\r\n\r\n", 401),
    "method-lowercase": (_head("delete", "/scim/v2/Users/x") + b"\r\n", 400),
    "header-70kb": (_head() + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    "headers-3000-fields": (_head() + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 20) for i in range(3_000)) + b"\r\n",
                            431),
    "header-without-colon": (_head() + b"NoColonHere\r\n\r\n", 400),
    "header-nul": (_head() + b"X-Nul: a\x00b\r\n\r\n", 400),
    "content-length-twice": (_head("POST") + b"Content-Type: application/scim+json\r\nContent-Length: 2\r\n"
                             b"Content-Length: 40\r\n\r\n{}", 400),
    "content-length-negative": (_head("POST") + b"Content-Type: application/scim+json\r\nContent-Length: -5\r\n\r\n",
                                400),
    "content-length-words": (_head("POST") + b"Content-Type: application/scim+json\r\nContent-Length: ten\r\n\r\n",
                             400),
    "chunked-and-content-length": (_head("POST") + b"Content-Type: application/scim+json\r\nContent-Length: 4\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "chunked-invalid": (_head("POST") + b"Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"zz\r\n{}\r\n0\r\n\r\n", 400),
    "transfer-encoding-gzip": (_head("POST") + b"Content-Type: application/scim+json\r\nTransfer-Encoding: gzip\r\n\r\n",
                               501),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", WIRE_CASES)
def test_raw_wire_request(served: tuple[Daemon, dict[str, str], Path], name: str) -> None:
    daemon, _, database = served
    request, expected = WIRE_CASES[name]
    before = snapshot(database)
    raw = raw_exchange(daemon.port, request, timeout=10)
    assert raw, "the connection was closed without an answer"
    check({"status": expected}, *parse_response(raw))
    assert snapshot(database) == before
    assert daemon.process is not None and daemon.process.poll() is None


@pytest.mark.slow
def test_the_daemon_survives_a_connection_dropped_mid_request(served: tuple[Daemon, dict[str, str], Path]) -> None:
    daemon, _, database = served
    before = snapshot(database)
    for partial in (_head("POST") + b"Content-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{\"user",
                    _head("PATCH", "/scim/v2/Users/x")[:20], b"\xff" * 1000):
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
            sock.sendall(partial)
    assert snapshot(database) == before
    assert daemon.request("GET", "/scim/v2/Users")[0] == 200


# -- accepted on purpose ------------------------------------------------------------------------


def test_a_900_kb_user_name_within_the_body_limit_is_stored_whole(client: ScimClient) -> None:
    """Decision: a body within SCIM_MAX_BODY_BYTES is judged on its content, not its size, so a
    900 KB userName is a valid (if silly) userName: 201, stored and returned byte for byte, and
    found by an exact filter (it is too long to be written into a GET filter, see MAX_LENGTH)."""
    name = "u" + "é" * 450_000  # 900 KB of UTF-8
    created = client.post("/scim/v2/Users", json={"userName": name})
    assert created.status_code == 201
    assert client.get(f"/scim/v2/Users/{created.json['id']}").json["userName"] == name
    assert client.post("/scim/v2/Users", json={"userName": name.upper()}).status_code == 409


def test_a_huge_array_of_valid_values_is_stored_whole(client: ScimClient) -> None:
    """Decision: like the huge userName, 30,000 valid emails within the body limit are accepted."""
    emails = [{"value": f"{i}@example.com"} for i in range(30_000)]
    created = client.post("/scim/v2/Users", json={"userName": "many-emails", "emails": emails})
    assert created.status_code == 201
    found = client.get("/scim/v2/Users", query_string={"filter": 'emails.value eq "29999@example.com"'})
    assert [r["id"] for r in found.json["Resources"]] == [created.json["id"]]


def test_body_keys_are_remembered_only_when_short(client: ScimClient) -> None:
    """Resolved body keys are cached (resource.resolve_key): the same key in any case maps to the
    same attribute, and keys too long to be an attribute's name, which only a hostile client
    sends, are resolved each time and never fill the cache."""
    from scimd.resource import _resolve_key_cached
    cached = _resolve_key_cached.cache_info().currsize
    junk = {f"urn:ietf:params:scim:schemas:core:2.0:User:{'x' * 300}{i}": "v" for i in range(50)}
    created = client.post("/scim/v2/Users", json={"userName": "long-keys", "TITLE": "Cook", **junk})
    assert created.status_code == 201 and created.json["title"] == "Cook"
    assert not any(key.startswith("x") for key in created.json)
    assert _resolve_key_cached.cache_info().currsize <= cached + 2  # userName and TITLE at most
    again = client.post("/scim/v2/Users", json={"username": "long-keys-2", "title": "Chef"})
    assert again.json["userName"] == "long-keys-2" and again.json["title"] == "Chef"


def test_a_single_object_for_a_multi_valued_attribute_is_read_as_one_element(client: ScimClient) -> None:
    """Documented leniency (resource.py): `members` or `emails` as one object, not an array, is
    that one element; what the object holds is still checked (see members-object-* in the corpus)."""
    user = client.post("/scim/v2/Users", json={"userName": "single", "emails": {"value": "s@example.com"}})
    assert user.status_code == 201 and user.json["emails"] == [{"value": "s@example.com"}]
    group = client.post("/scim/v2/Groups", json={"displayName": "single", "members": {"value": user.json["id"]}})
    assert group.status_code == 201 and [m["value"] for m in group.json["members"]] == [user.json["id"]]
