"""Looking Glass: redaction, ring, client detection, and the HTTP API over a stub SCIM app."""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
import pytest
from werkzeug.test import Client, EnvironBuilder, TestResponse

from scimd import lookingglass as lg
from scimd import schema, trace
from scimd.app import ScimApp, with_looking_glass
from scimd.config import Config
from scimd.directory import Directory
from scimd.lookingglass_http import LookingGlass
from scimd.wsgi import Reply, ScimRequest
from tests.conftest import TOKEN as TEST_TOKEN
from tests.conftest import ScimClient, ServerClient, make_app, patch_body

TOKEN = "lg-test-token-0123456789"
SECRET = "hunter2-very-secret"
R = lg.REDACTED
SECRETS = lg.Secrets.of([TOKEN])


AUTH = {"Authorization": f"Bearer {TOKEN}"}


class StubScim(ScimApp):
    """scimd's app plumbing (request ids, the after-answer hook the Looking Glass records from)
    over one handler for every path: it echoes the keys of the JSON it got (never its values:
    like scimd, it returns no secret in a success) and notes decisions like the core does."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, store=None)  # type: ignore[arg-type]  # no handler here reads it

    def respond(self, request: ScimRequest, rid: str) -> Reply:
        document = orjson.loads(request.get_data()) if request.get_data() else None
        trace.note("leniency", text='coerced "False" to false')
        if request.args.get("filter"):
            trace.note("filter", tree=request.args["filter"], sql="SELECT id FROM users WHERE user_name = ?",
                       params=["bjensen"])
        if request.method == "PATCH" and document:
            for op in document.get("Operations", []):
                trace.note("patch", op=op.get("op"), path=op.get("path"), before="old", after=op.get("value"))
        body = orjson.dumps({"echo": sorted(document) if isinstance(document, dict) else None, "path": request.path})
        return Reply(200, body, [("Content-Type", "application/scim+json")])


def make(scim_class: type[StubScim] = StubScim, **config: Any) -> tuple[LookingGlass, Client]:
    options = {k: config.pop(k) for k in ("max_streams", "keepalive", "stream_lifetime") if k in config}
    settings = Config(api_tokens=(TOKEN,), **config)
    glass = with_looking_glass(scim_class(settings), settings, **options)
    return glass, ServerClient(glass)


def events(client: Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/looking-glass/api/events", query_string=params, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json["events"]


def stored_request(document: Any) -> Any:
    text = lg.redact_body(orjson.dumps(document)).text()
    assert text is not None
    return orjson.loads(text)


# -- redaction ---------------------------------------------------------------------------


def test_password_in_post_and_put_bodies_at_any_depth_and_case() -> None:
    user = {"userName": "bjensen", "PassWord": SECRET, "name": {"givenName": "Barbara"},
            "nested": [{"password": SECRET}], f"{schema.USER_URN}:password": SECRET}
    assert stored_request(user) == {"userName": "bjensen", "PassWord": R, "name": {"givenName": "Barbara"},
                                    "nested": [{"password": R}], f"{schema.USER_URN}:password": R}


def test_every_returned_never_attribute_is_sensitive() -> None:
    def walk(attrs: Iterable[schema.Attribute]) -> Iterator[schema.Attribute]:
        for attr in attrs:
            yield attr
            yield from walk(attr.sub_attributes)

    never = {a.name.lower() for s in schema.SCHEMAS.values() for a in walk(s.attributes) if a.returned == "never"}
    assert never and never <= lg.SENSITIVE_NAMES
    custom = schema.Attribute("creds", schema.COMPLEX, sub_attributes=(
        schema.Attribute("pin", returned="never"), schema.Attribute("label")))
    assert lg._never_returned([custom]) == {"pin"}


@pytest.mark.parametrize("op", [
    {"op": "replace", "path": "password", "value": SECRET},
    {"op": "Replace", "path": "PASSWORD", "value": SECRET},
    {"op": "add", "path": f"{schema.USER_URN}:password", "value": SECRET},
    {"op": "replace", "path": "password", "value": {"deep": SECRET}},
])
def test_patch_op_with_password_path(op: dict[str, Any]) -> None:
    patch = {"schemas": [schema.PATCH_OP_URN], "Operations": [op]}
    assert stored_request(patch)["Operations"][0]["value"] == R


def test_patch_value_objects_with_and_without_path() -> None:
    patch = {"Operations": [
        {"op": "replace", "value": {"password": SECRET, "active": True}},
        {"op": "add", "path": "name", "value": {"givenName": "B", "password": SECRET}},
        {"op": "replace", "value": {f"{schema.USER_URN}:password": SECRET, "name.givenName": "B"}},
    ]}
    ops = stored_request(patch)["Operations"]
    assert ops[0]["value"] == {"password": R, "active": True}
    assert ops[1]["value"] == {"givenName": "B", "password": R}
    assert ops[2]["value"] == {f"{schema.USER_URN}:password": R, "name.givenName": "B"}


def test_bulk_operation_data() -> None:
    bulk = {"schemas": [schema.BULK_REQUEST_URN], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "q1", "data": {"userName": "a", "password": SECRET}},
        {"method": "PATCH", "path": "/Users/1", "data": {"Operations": [
            {"op": "replace", "path": "password", "value": SECRET}]}},
    ]}
    ops = stored_request(bulk)["Operations"]
    assert ops[0]["data"] == {"userName": "a", "password": R}
    assert ops[0]["path"] == "/Users"
    assert ops[1]["data"]["Operations"][0]["value"] == R


def test_search_request_filter_values() -> None:
    search = {"schemas": [schema.SEARCH_REQUEST_URN], "filter": f'userName eq "bj" and password eq "{SECRET}"'}
    assert SECRET not in stored_request(search)["filter"]


def test_unicode_escaped_key_is_still_found() -> None:
    body = b'{"p\\u0061ssword": "' + SECRET.encode() + b'"}'
    assert orjson.loads(lg.redact_body(body).text() or "") == {"password": R}


def test_token_like_keys_and_configured_tokens() -> None:
    doc = {"access_token": "x", "Authorization": "Bearer y", "note": f"my token is {TOKEN}", TOKEN: 1}
    body = lg.redact_body(orjson.dumps(doc), SECRETS)
    assert TOKEN not in (body.text() or "")
    assert orjson.loads(body.text() or "") == {"access_token": R, "Authorization": R, "note": f"my token is {R}", R: 1}


def test_unparsable_body_naming_a_secret_is_withheld() -> None:
    body = lg.redact_body(b'{"password": "' + SECRET.encode() + b'", oops')
    assert SECRET not in (body.text() or "") and (body.text() or "").startswith(R)
    assert lg.redact_body(b"not json at all").text() == "not json at all"
    assert TOKEN not in (lg.redact_body(f"plain {TOKEN}".encode(), SECRETS).text() or "")


def test_body_without_secrets_is_kept_as_sent() -> None:
    raw = b'{ "userName" : "bjensen" }'
    kept = lg.redact_body(raw)
    assert kept.data is raw and kept.text() == '{ "userName" : "bjensen" }' and not kept.truncated
    assert lg.redact_body(b"").text() is None


@pytest.mark.parametrize("body", [
    b'{"userName":"bj","Operations":[{"op":"Add","value":{"name":{"PassWord":"' + SECRET.encode() + b'"}}}]}',
    b'{"urn:ietf:params:scim:schemas:core:2.0:User:PASSWORD":"' + SECRET.encode() + b'"}',
    b'{"Operations":[{"op":"replace","path":"pAsSwOrD","value":"' + SECRET.encode() + b'"}]}',
    b'{"data":{"x":[{"y":{"passWORD":"' + SECRET.encode() + b'"}}]}}',
])
def test_secret_names_in_any_case_and_place_defeat_the_fast_path(body: bytes) -> None:
    kept = lg.redact_body(body)
    assert SECRET not in (kept.text() or "") and R in (kept.text() or "")


@pytest.mark.parametrize("body", [
    f'{{"note":"{TOKEN}"}}'.encode(),
    f'{{"{TOKEN}":1}}'.encode(),
    f'not json, but {TOKEN} all the same'.encode(),
    f'{{"filler":"{"y" * (lg.BODY_LIMIT - 100)}","late":"{TOKEN}"}}'.encode(),  # near the cut
])
def test_a_token_anywhere_in_a_body_defeats_the_fast_path(body: bytes) -> None:
    for response in (False, True):
        assert TOKEN not in (lg.redact_body(body, SECRETS, response=response).text() or "")


def test_a_token_spelled_with_json_escapes_in_a_response_is_found() -> None:
    odd = lg.Secrets.of(['tok"en/with\\escapes'])
    body = orjson.dumps({"nickName": odd.texts[0]})  # orjson writes tok\"en/with\\escapes
    assert odd.texts[0].encode() not in body
    assert orjson.loads(lg.redact_body(body, odd, response=True).text() or "") == {"nickName": R}


def test_a_token_spelled_with_unicode_escapes_in_a_request_is_found() -> None:
    escaped = TOKEN.replace("t", "\\u0074").encode()  # no plain copy of it left
    body = b'{"note":"' + escaped + b'","' + escaped + b'":1}'
    assert orjson.loads(lg.redact_body(body, SECRETS).text() or "") == {"note": R, R: 1}


def test_a_clean_body_is_kept_byte_for_byte() -> None:
    # Whitespace, non-ASCII, even bytes that are not UTF-8: as sent. (A backslash is a trigger.)
    for raw in ('{ "userName" :\t"bjénsen", "emails": [ ] }'.encode(), b"\xff not utf-8", b"{}"):
        for response in (False, True):
            kept = lg.redact_body(raw, SECRETS, response=response)
            assert kept.data is raw and kept.size == len(raw) and not kept.truncated
    big = orjson.dumps({"members": [{"value": f"user-{i}"} for i in range(10_000)]})
    assert lg.redact_body(big, SECRETS).data == big[:lg.BODY_LIMIT]


def test_redaction_never_modifies_its_input() -> None:
    doc = {"password": SECRET, "Operations": [{"op": "replace", "path": "password", "value": SECRET}]}
    snapshot = orjson.dumps(doc)
    lg.redact_json(doc)
    lg.redact_decision({"kind": "patch", "path": "password", "before": doc, "after": doc})
    assert orjson.dumps(doc) == snapshot


@pytest.mark.parametrize(("query", "expected"), [
    ("access_token=abc&count=2", "access_token=[redacted]&count=2"),
    ("token=abc", "token=[redacted]"),
    ("ticket=abc", "ticket=[redacted]"),
    ("Access_Token=abc", "Access_Token=[redacted]"),
    ("password=abc", "password=[redacted]"),
    ("filter=userName%20eq%20%22bj%22", "filter=userName%20eq%20%22bj%22"),
    ("filter=password+eq+%22abc%22", 'filter=password%20eq%20%22[redacted]%22'),
    (f"x={TOKEN}", "x=[redacted]"),
    (f"filter=userName+eq+%22{TOKEN}%22", "filter=[redacted]"),
    ("%74oken=abc", "%74oken=[redacted]"),  # `token` with a percent-encoded t
    ("acc%65ss_token=abc&count=1", "acc%65ss_token=[redacted]&count=1"),
    ("attributes=password", "attributes=password"),
    ("", ""),
])
def test_query_strings(query: str, expected: str) -> None:
    assert lg.redact_query(query, SECRETS) == expected


def test_no_decisions_cost_no_serialisation() -> None:
    assert lg.redact_decisions([]) is lg.NO_DECISIONS
    assert lg.redact_decisions([{"kind": "leniency", "text": f"note {TOKEN}"}], SECRETS) == (
        b'[{"kind":"leniency","text":"note [redacted]"}]')


def test_decisions_before_after_and_filter() -> None:
    patch = lg.redact_decision({"kind": "patch", "op": "replace", "path": "password", "before": "old", "after": SECRET})
    assert patch == {"kind": "patch", "op": "replace", "path": "password", "before": R, "after": R}
    whole = lg.redact_decision({"kind": "patch", "op": "replace", "path": None,
                                "before": {"password": "old"}, "after": {"password": SECRET, "active": True}})
    assert whole["after"] == {"password": R, "active": True} and whole["before"] == {"password": R}
    no_path = lg.redact_decision({"kind": "patch", "op": "replace", "path": "(no path)", "attribute": "password",
                                  "before": "old", "after": SECRET})
    assert no_path["before"] == R and no_path["after"] == R
    found = lg.redact_decision({"kind": "filter", "tree": f'password eq "{SECRET}"',
                                "sql": "SELECT id FROM users WHERE password = ?", "params": [SECRET]})
    assert SECRET not in orjson.dumps(found).decode() and found["params"] == [R]
    harmless = {"kind": "filter", "tree": 'userName eq "bj"', "sql": "... = ?", "params": ["bj"]}
    assert lg.redact_decision(harmless) == harmless
    lenient = lg.redact_decision({"kind": "leniency", "text": f"trimmed '{SECRET}' for 'password'"})
    assert SECRET not in lenient["text"]
    assert lg.redact_decision({"kind": "leniency", "text": 'coerced "False" to false'})["text"] == 'coerced "False" to false'


# -- truncation --------------------------------------------------------------------------


def test_bodies_are_cut_at_64_kib_and_say_so() -> None:
    exact = b"x" * lg.BODY_LIMIT
    assert lg.redact_body(exact).truncated is False
    big = orjson.dumps({"members": [{"value": f"user-{i}"} for i in range(10_000)]})
    body = lg.redact_body(big)
    assert body.truncated and body.size == len(big) and len((body.text() or "").encode()) <= lg.BODY_LIMIT


def test_truncated_body_is_redacted_before_the_cut() -> None:
    big = orjson.dumps({"password": SECRET, "filler": "y" * 100_000})
    body = lg.redact_body(big)
    assert body.truncated and SECRET not in (body.text() or "") and R in (body.text() or "")


def test_secret_straddling_the_cut_is_not_half_kept() -> None:
    head = b"z" * (lg.BODY_LIMIT - 5)
    body = lg.redact_body(head + TOKEN.encode() + b"tail" * 100, SECRETS)
    assert TOKEN[:5] not in (body.text() or "")[-10:]


# -- client detection --------------------------------------------------------------------


@pytest.mark.parametrize(("agent", "body", "query", "client"), [
    ("Microsoft Azure AD SCIM provisioning 1.0.0", b"", "", "Entra"),
    ("Okta SCIM Client 1.0.0", b"", "", "Okta"),
    ("SailPoint IdentityNow", b"", "", "SailPoint"),
    ("OneLogin SCIM", b"", "", "OneLogin"),
    ("JumpCloud/1.0", b"", "", "JumpCloud"),
    ("Google-Auto-Provisioning", b"", "", "Google"),
    ("PingFederate/11", b"", "", "Ping"),
    ("", b"", "aadOptscim062020", "Entra"),
    ("", b'{"Operations":[{"op":"Replace","path":"active","value":"False"}]}', "", "Entra"),
    ("", b'{"schemas":["http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"]}', "", "Entra"),
    ("", b'{"schemas":["urn:scim:schemas:core:1.0"]}', "", "OneLogin"),
    ("", b'{"Operations":[{"op":"replace"}]}', "", "unknown"),
    ("curl/8.5.0", b"", "", "curl"),
    ("python-httpx/0.27", b"", "", "python-httpx"),
])
def test_detect_client(agent: str, body: bytes, query: str, client: str) -> None:
    assert lg.detect_client(agent, body, query) == client


# -- ring --------------------------------------------------------------------------------


def event(**overrides: Any) -> lg.Event:
    """Event.capture from named parts, each with a default."""
    f: dict[str, Any] = dict(
        started=1704067200.0, client_address="10.0.0.1", user_agent="Okta SCIM Client", method="PATCH",
        path="/scim/v2/Users/1", query="", status=200, duration_ms=1.23456, request_id="r1",
        request_type="application/scim+json", request_body=b'{"Operations":[]}',
        response_type="application/scim+json", response_body=b"{}", decisions=[{"kind": "leniency", "text": "x"}],
        secrets=lg.NO_SECRETS)
    f.update(overrides)
    environ = {"REMOTE_ADDR": f["client_address"], "HTTP_USER_AGENT": f["user_agent"], "REQUEST_METHOD": f["method"],
               "PATH_INFO": f["path"], "QUERY_STRING": f["query"], "CONTENT_TYPE": f["request_type"],
               "HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    return lg.Event.capture(environ, f["status"], f["response_type"], f["request_id"], f["started"],
                            f["duration_ms"] / 1000, f["request_body"], f["response_body"], f["decisions"],
                            f["secrets"])


def seqs(events: list[lg.Event]) -> list[int]:
    return [e.seq for e in events]


def test_ring_is_bounded_and_sequenced() -> None:
    ring = lg.EventRing(3)
    assert ring.since(0) == []
    for i in range(5):
        assert ring.append(event()) == i + 1
    assert seqs(ring.since(0)) == [3, 4, 5]
    assert seqs(ring.since(3)) == [4, 5]
    assert seqs(ring.since(0, limit=2)) == [3, 4]
    assert ring.since(5) == [] and ring.since(99) == []


def test_wait_since_times_out_then_wakes_on_append() -> None:
    ring = lg.EventRing(10)
    started = time.monotonic()
    assert ring.wait_since(0, timeout=0.05) == []
    assert time.monotonic() - started >= 0.04
    threading.Timer(0.05, ring.append, args=(event(),)).start()
    assert seqs(ring.wait_since(0, timeout=5)) == [1]


def test_a_reader_stops_at_an_event_still_being_stored() -> None:
    """Appends take no lock: a request may be numbered 2 and still be storing its event when the
    request numbered 3 has stored its own. A reader must wait for 2, not skip it for good."""
    ring = lg.EventRing(10)
    ring.append(event())
    slow = event()
    slow.seq = next(ring._numbers)  # what append() does first; then its request is preempted
    ring.append(event())
    assert seqs(ring.since(0)) == [1] and ring.wait_since(1, timeout=0.01) == []
    ring._slots[slow.seq % ring.capacity] = slow  # ...and resumes
    assert seqs(ring.since(0)) == [1, 2, 3] and ring.last_seq == 3


def test_concurrent_appends_reach_readers_in_order_and_once() -> None:
    ring = lg.EventRing(10_000)
    writers, each = 4, 1500
    seen: list[int] = []

    def follow() -> None:  # as a stream does
        while len(seen) < writers * each:
            batch = ring.wait_since(seen[-1] if seen else 0, timeout=5, limit=lg.MAX_LIMIT)
            assert batch, "a stream waited out its timeout while events were being appended"
            seen.extend(seqs(batch))

    reader = threading.Thread(target=follow)
    threads = [threading.Thread(target=lambda: [ring.append(event()) for _ in range(each)]) for _ in range(writers)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside append() too
    try:
        for thread in [reader, *threads]:
            thread.start()
        for thread in [*threads, reader]:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert seen == list(range(1, writers * each + 1)) and ring.last_seq == writers * each


def test_close_wakes_waiters() -> None:
    ring = lg.EventRing(10)
    threading.Timer(0.05, ring.close).start()
    started = time.monotonic()
    assert ring.wait_since(0, timeout=5) == [] and ring.closed
    assert time.monotonic() - started < 4


def test_event_shape() -> None:
    ring = lg.EventRing(10)
    ring.append(event())
    ring.append(captured := event())
    assert orjson.loads(captured.to_json()) == {
        "seq": 2, "time": "2024-01-01T00:00:00.000000Z", "requestId": "r1", "clientAddress": "10.0.0.1",
        "userAgent": "Okta SCIM Client", "client": "Okta", "method": "PATCH", "path": "/scim/v2/Users/1",
        "query": "", "resource": "Users", "status": 200, "durationMs": 1.235,
        "request": {"contentType": "application/scim+json", "body": '{"Operations":[]}', "size": 17, "truncated": False},
        "response": {"contentType": "application/scim+json", "body": "{}", "size": 2, "truncated": False},
        "decisions": [{"kind": "leniency", "text": "x"}],
    }
    assert captured.to_json() is captured.to_json()  # rendered once


def test_capture_redacts_every_field_and_snapshots_decisions() -> None:
    params = ["bjensen"]
    captured = event(user_agent=f"agent {TOKEN}", path=f"/scim/v2/Users/{TOKEN}", query=f"token={TOKEN}",
                     status=400, request_body=orjson.dumps({"password": SECRET}),
                     response_body=orjson.dumps({"password": SECRET}),
                     decisions=[{"kind": "filter", "tree": "x", "params": params}], secrets=SECRETS)
    params.append("changed later by the core")
    text = captured.to_json().decode()
    assert TOKEN not in text and SECRET not in text and "changed later" not in text


def test_a_token_in_any_header_or_line_of_the_exchange_is_scrubbed() -> None:
    captured = event(client_address=f"{TOKEN}.example", user_agent=f"Okta {TOKEN}", method=TOKEN,
                     path=f"/scim/v2/Users/{TOKEN}", request_type=f"application/json; x={TOKEN}",
                     request_id=f"id-{TOKEN}", response_type=f"text/plain; y={TOKEN}", secrets=SECRETS)
    shown = orjson.loads(captured.to_json())
    assert TOKEN not in orjson.dumps(shown).decode()
    assert shown["requestId"] == f"id-{R}" and shown["path"] == f"/scim/v2/Users/{R}" and shown["method"] == R
    assert orjson.loads(event(request_id="", secrets=SECRETS).to_json())["requestId"] is None


def test_request_fields_absent_from_the_environ_show_empty() -> None:
    environ = {"PATH_INFO": "/scim/v2/Users", "REQUEST_METHOD": "GET"}
    shown = orjson.loads(lg.Event.capture(environ, 200, "application/scim+json", "r9", 0.0, 0.0, b"", b"{}",
                                          []).to_json())
    assert shown["requestId"] == "r9" and shown["response"]["contentType"] == "application/scim+json"
    assert shown["userAgent"] == "" and shown["request"]["contentType"] == "" and shown["clientAddress"] == ""


def test_a_line_feed_in_the_path_keeps_the_other_fields_in_place() -> None:
    shown = orjson.loads(event(path="/scim/v2/Users/a\nb\nc", user_agent="ua").to_json())
    assert shown["path"] == "/scim/v2/Users/a\nb\nc" and shown["userAgent"] == "ua" and shown["requestId"] == "r1"


def test_response_is_searched_for_never_returned_names_in_canonical_case() -> None:
    leaked = orjson.dumps({"Resources": [{"userName": "a", f"{schema.USER_URN}:password": SECRET, "password": SECRET}]})
    assert SECRET not in (lg.redact_body(leaked, response=True).text() or "")
    error = orjson.dumps({"status": "400", "detail": f"'{SECRET}' is not a valid value for 'password'"})
    assert SECRET not in (lg.redact_body(error, response=True).text() or "")
    listing = b'{"Resources":[{"userName":"token-holder","displayName":"Ticket desk"}]}'
    assert lg.redact_body(listing, response=True).data is listing


@pytest.mark.parametrize(("status", "path"), [
    (400, "/scim/v2/Users"), (409, "/scim/v2/Users/1"), (500, "/scim/v2"),
    (200, "/scim/v2/Bulk"),  # each failed operation's error is inside the 200
])
def test_responses_that_may_quote_the_request_are_searched_for_secret_names(status: int, path: str) -> None:
    quoting = orjson.dumps({"detail": f"'{SECRET}' is not a valid value for 'password'"})
    assert SECRET not in event(status=status, path=path, response_body=quoting).to_json().decode()


def test_a_successful_representation_is_searched_for_tokens_only() -> None:
    # scimd's projection never writes a returned:never attribute, so the name alone costs no search...
    named = orjson.dumps({"userName": "a", "displayName": "password reset desk"})
    assert event(status=200, response_body=named, secrets=SECRETS).response.data is named
    # ...but a token a client stored in any attribute comes back in every GET of it.
    stored = orjson.dumps({"userName": "a", "nickName": TOKEN, "title": f"escaped {TOKEN}\"/"})
    text = event(status=201, response_body=stored, secrets=SECRETS).to_json().decode()
    assert TOKEN not in text and text.count(R) == 2


@pytest.mark.parametrize(("path", "resource"), [
    ("/scim/v2/Users", "Users"), ("/scim/v2/Groups/abc", "Groups"), ("/scim/v2/Bulk", "Bulk"),
    ("/scim/v2/.search", ".search"), ("/scim/v2", "root"),
])
def test_resource_of(path: str, resource: str) -> None:
    assert lg.resource_of(path) == resource


def test_tickets_verify_and_expire() -> None:
    signer = lg.TicketSigner()
    ticket, expires = signer.issue()
    assert signer.verify(ticket) and expires.endswith("Z")
    assert not signer.verify(ticket + "x") and not signer.verify("") and not signer.verify("1.2.3")
    assert not lg.TicketSigner().verify(ticket)  # another process's key
    assert not lg.TicketSigner(ttl=0).verify(lg.TicketSigner(ttl=0).issue()[0])
    stale = lg.TicketSigner(ttl=-1)
    assert not stale.verify(stale.issue()[0])


# -- HTTP: capture -----------------------------------------------------------------------


def test_capture_records_the_exchange_redacted() -> None:
    glass, client = make()
    user = {"userName": "bjensen", "password": SECRET}
    response = client.post("/scim/v2/Users?access_token=abc", json=user,
                           headers={**AUTH, "User-Agent": "Okta SCIM Client 1.0.0", "X-Other": "kept-out",
                                    "X-Request-Id": "req-1"})
    assert response.json["echo"] == sorted(user)  # the app still read the whole body
    [event] = events(client)
    assert event["seq"] == 1 and event["status"] == 200 and event["requestId"] == "req-1"
    assert event["client"] == "Okta" and event["method"] == "POST" and event["resource"] == "Users"
    assert event["query"] == "access_token=[redacted]"
    assert orjson.loads(event["request"]["body"]) == {"userName": "bjensen", "password": R}
    assert orjson.loads(event["response"]["body"])["echo"] == ["password", "userName"]
    assert event["decisions"] == [{"kind": "leniency", "text": 'coerced "False" to false'}]
    stored = orjson.dumps(event).decode()
    for leak in (SECRET, TOKEN, "kept-out", "abc"):
        assert leak not in stored


def test_capture_attaches_patch_and_filter_decisions() -> None:
    _, client = make()
    patch = {"Operations": [{"op": "replace", "path": "password", "value": SECRET},
                            {"op": "replace", "path": "displayName", "value": "Babs"}]}
    client.patch("/scim/v2/Users/1", json=patch, headers=AUTH)
    client.get("/scim/v2/Users", query_string={"filter": 'userName eq "bjensen"'}, headers=AUTH)
    first, second = events(client)
    patches = [d for d in first["decisions"] if d["kind"] == "patch"]
    assert patches == [{"kind": "patch", "op": "replace", "path": "password", "before": R, "after": R},
                       {"kind": "patch", "op": "replace", "path": "displayName", "before": "old", "after": "Babs"}]
    [found] = [d for d in second["decisions"] if d["kind"] == "filter"]
    assert found["params"] == ["bjensen"] and "user_name = ?" in found["sql"]


class NotingScim(StubScim):
    def respond(self, request: ScimRequest, rid: str) -> Reply:
        trace.note("odd", value=2**70)  # orjson cannot encode it
        return Reply(200, b"{}", [("Content-Type", "application/scim+json")])


def test_a_capture_failure_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    glass, client = make(NotingScim)
    assert client.get("/scim/v2/Users").status_code == 200
    assert glass.ring is not None and glass.ring.last_seq == 0
    assert "could not record GET /scim/v2/Users" in caplog.text


def test_only_scim_paths_are_captured() -> None:
    glass, client = make()
    client.get("/healthz")
    client.get("/scim/v2x")
    client.get("/looking-glass/api/events", headers=AUTH)
    assert glass.ring is not None and glass.ring.last_seq == 0


def test_oversized_declared_body_is_left_to_the_app() -> None:
    _, client = make(max_body_bytes=1024)
    client.post("/scim/v2/Users", data=b'{"userName":"' + b"x" * 2000 + b'"}', content_type="application/json",
                headers=AUTH)
    [event] = events(client)
    assert event["request"]["body"] is None


def deliver(glass: LookingGlass, body: bytes, *, drop: tuple[str, ...] = (), **set_: Any) -> dict[str, Any]:
    """Call the middleware with an environ as a server builds it, minus `drop`, plus `set_`."""
    environ = EnvironBuilder(path="/scim/v2/Users", method="POST", data=body, headers=AUTH,
                             content_type="application/json").get_environ()
    for name in drop:
        environ.pop(name, None)
    environ.update(set_)
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)

    result = glass(environ, start_response)
    try:
        reply = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()  # as the server does once it has sent the reply
    assert statuses == ["200 OK"]
    return orjson.loads(reply)


@pytest.mark.parametrize(("body", "drop", "set_", "kept"), [
    # waitress: no CONTENT_LENGTH without a body (it sizes a chunked one), input always terminated
    (b"", ("CONTENT_LENGTH",), {"wsgi.input_terminated": True}, None),
    (b'{"userName":"bj"}', (), {"wsgi.input_terminated": True}, '{"userName":"bj"}'),
    # a chunked body, from a server that passes it on as a terminated stream of unknown length
    (b'{"userName":"chunked"}', ("CONTENT_LENGTH",), {"HTTP_TRANSFER_ENCODING": "chunked",
                                                      "wsgi.input_terminated": True}, '{"userName":"chunked"}'),
    # ...and from one that does not say the stream ends: nothing may be read, by us or the app
    (b'{"userName":"chunked"}', ("CONTENT_LENGTH",), {"HTTP_TRANSFER_ENCODING": "chunked"}, None),
    # chunked with a Content-Length too, which werkzeug (and so the app) ignores
    (b'{"userName":"chunked"}', (), {"CONTENT_LENGTH": "5", "HTTP_TRANSFER_ENCODING": "chunked",
                                     "wsgi.input_terminated": True}, '{"userName":"chunked"}'),
    (b'{"userName":"plus"}', (), {"CONTENT_LENGTH": "+19"}, None),  # not a plain number: werkzeug's 0
    (b"", (), {"CONTENT_LENGTH": "0"}, None),
    (b"", (), {"CONTENT_LENGTH": "nonsense"}, None),
])
def test_request_bodies_as_servers_deliver_them(body: bytes, drop: tuple[str, ...], set_: dict[str, Any],
                                                kept: str | None) -> None:
    glass, client = make()
    assert (deliver(glass, body, drop=drop, **set_)["echo"] is not None) == (kept is not None)  # what the app read
    [event] = events(client)
    assert event["request"]["body"] == kept


def test_an_exchange_is_recorded_once_the_server_closes_the_response() -> None:
    """After the client has its answer (waitress sends the body before it calls close()), and once."""
    glass, client = make()
    environ = EnvironBuilder(path="/scim/v2/Users/7", headers=AUTH).get_environ()
    result = glass(environ, lambda status, headers, exc_info=None: None)
    assert b"".join(result) == b'{"echo":null,"path":"/scim/v2/Users/7"}'
    assert events(client) == []
    result.close()
    result.close()
    [event] = [e for e in events(client) if e["path"] == "/scim/v2/Users/7"]
    assert event["status"] == 200 and event["response"]["body"] == '{"echo":null,"path":"/scim/v2/Users/7"}'


def test_disabled_captures_nothing_and_hides_every_route() -> None:
    glass, client = make(looking_glass=False)
    assert client.post("/scim/v2/Users", json={"userName": "a"}).status_code == 200
    assert glass.ring is None
    for path in ("/looking-glass", "/looking-glass/", "/looking-glass/looking-glass.js",
                 "/looking-glass/api/events", "/looking-glass/api/stream", "/looking-glass/anything"):
        assert client.get(path, headers=AUTH).status_code == 404, path
    assert client.post("/looking-glass/api/ticket", headers=AUTH).status_code == 404


# -- HTTP: API and auth ------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_api_needs_the_bearer_token(headers: dict[str, str]) -> None:
    _, client = make()
    for response in (client.get("/looking-glass/api/events", headers=headers),
                     client.get("/looking-glass/api/stream", headers=headers),
                     client.post("/looking-glass/api/ticket", headers=headers)):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="scimd"'
        assert response.json["status"] == 401


def test_events_since_and_limit() -> None:
    _, client = make()
    for i in range(5):
        client.get(f"/scim/v2/Users/{i}", headers=AUTH)
    response = client.get("/looking-glass/api/events?since=1&limit=2", headers=AUTH)
    assert [e["seq"] for e in response.json["events"]] == [2, 3]
    assert response.json["lastSeq"] == 5 and response.json["capacity"] == 500
    assert response.headers["Cache-Control"] == "no-store"
    assert [e["seq"] for e in events(client, since=3)] == [4, 5]


@pytest.mark.parametrize("query", ["since=-1", "since=abc", "since=%C2%B2", "limit=0", "limit=1001", "limit=1.5"])
def test_events_bad_params(query: str) -> None:
    _, client = make()
    response = client.get(f"/looking-glass/api/events?{query}", headers=AUTH)
    assert response.status_code == 400 and response.json["detail"]


def test_viewer_and_assets() -> None:
    _, client = make()
    redirect = client.get("/looking-glass")
    assert redirect.status_code == 308 and redirect.headers["Location"] == "/looking-glass/"
    page = client.get("/looking-glass/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.text
    assert "<script>" not in html and "<style" not in html and "http" not in html.split("<body>")[0]
    assert client.get("/looking-glass/looking-glass.js").mimetype == "text/javascript"
    assert client.get("/looking-glass/looking-glass.css").mimetype == "text/css"
    assert client.get("/looking-glass/nope").status_code == 404
    assert client.get("/looking-glass/api/ticket", headers=AUTH).status_code == 405
    assert client.post("/looking-glass/api/events", headers=AUTH).status_code == 405


def test_viewer_never_uses_inner_html_or_local_storage() -> None:
    _, client = make()
    script = client.get("/looking-glass/looking-glass.js").text
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "localStorage", "document.write", "eval("):
        assert forbidden not in script


# -- HTTP: Server-Sent Events ------------------------------------------------------------


def read_stream(response: TestResponse, until: str, timeout: float = 5.0) -> str:
    """Read the SSE body in a thread until `until` shows up; fail instead of hanging."""
    chunks: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        for chunk in response.response:
            chunks.put(chunk)
            if until.encode() in chunk:
                break
        chunks.put(None)

    threading.Thread(target=pump, daemon=True).start()
    text = ""
    deadline = time.monotonic() + timeout
    while until not in text:
        chunk = chunks.get(timeout=max(0.01, deadline - time.monotonic()))
        if chunk is None:
            break
        text += chunk.decode()
    return text


def open_stream(client: Client, query: str = "", headers: dict[str, str] | None = None) -> TestResponse:
    return client.get(f"/looking-glass/api/stream{query}", headers=AUTH if headers is None else headers,
                      buffered=False)


def test_stream_yields_appended_events() -> None:
    _, client = make(keepalive=0.05, stream_lifetime=5)
    stream = open_stream(client)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    threading.Timer(0.1, lambda: client.get("/scim/v2/Users/7", headers=AUTH)).start()
    text = read_stream(stream, "/scim/v2/Users/7")
    stream.close()
    assert ": keep-alive" in text and "id: 1\ndata: {" in text
    data = next(line for line in text.splitlines() if line.startswith("data: "))
    assert orjson.loads(data[len("data: "):])["path"] == "/scim/v2/Users/7"


def test_stream_resumes_from_last_event_id_and_ends() -> None:
    _, client = make(keepalive=0.05, stream_lifetime=0.3)
    for i in range(3):
        client.get(f"/scim/v2/Users/{i}", headers=AUTH)
    stream = open_stream(client, headers={**AUTH, "Last-Event-ID": "1"})
    text = b"".join(stream.response).decode()  # ends by itself after its lifetime
    assert "id: 1\n" not in text and "id: 2\n" in text and "id: 3\n" in text
    assert "retry: " in text
    assert open_stream(client, headers={**AUTH, "Last-Event-ID": "x"}).status_code == 400


def test_stream_with_ticket_instead_of_header() -> None:
    _, client = make(keepalive=0.05, stream_lifetime=0.2)
    client.get("/scim/v2/Users/1", headers=AUTH)
    issued = client.post("/looking-glass/api/ticket", headers=AUTH).json
    assert set(issued) == {"ticket", "expires"} and TOKEN not in issued["ticket"]
    stream = open_stream(client, f"?ticket={issued['ticket']}&since=0", headers={})
    assert stream.status_code == 200 and "id: 1\n" in b"".join(stream.response).decode()
    assert open_stream(client, "?ticket=forged.x.y", headers={}).status_code == 401


def test_stream_cap_answers_503_and_frees_slots_on_close() -> None:
    _, client = make(max_streams=2, keepalive=0.05, stream_lifetime=5)
    first, second = open_stream(client), open_stream(client)
    refused = open_stream(client)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    first.close()
    third = open_stream(client)
    assert third.status_code == 200
    second.close()
    third.close()


def test_shutdown_ends_open_streams() -> None:
    glass, client = make(keepalive=5, stream_lifetime=30)
    stream = open_stream(client)
    threading.Timer(0.1, glass.shutdown).start()
    started = time.monotonic()
    b"".join(stream.response)
    assert time.monotonic() - started < 4


# -- with scimd's own app ----------------------------------------------------------------


def test_scimd_exchanges_never_store_a_secret_or_a_token(tmp_path: Path) -> None:
    """End to end with the real core, whose responses the capture trusts a little (see
    redact_body): a password in every kind of request, a token stored in an attribute and read
    back, and errors that quote what the client sent."""
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS="true")
    client = ScimClient(app)
    token = TEST_TOKEN
    created = client.post("/scim/v2/Users", json={"schemas": [schema.USER_URN], "userName": "pw",
                                                  "password": SECRET, "nickName": token}).json
    path = f"/scim/v2/Users/{created['id']}"
    exchanges = [
        client.get(path),
        client.put(path, json={"schemas": [schema.USER_URN], "userName": "pw", "password": SECRET, "nickName": token}),
        client.patch(path, json=patch_body({"op": "replace", "path": "password", "value": SECRET})),
        client.patch(path, json=patch_body({"op": "replace", "value": {"password": SECRET}})),
        client.patch(path, json=patch_body({"op": "replace", "path": f'password[value eq "{SECRET}"]', "value": "x"})),
        client.get("/scim/v2/Users", query_string={"filter": f'password eq "{SECRET}"'}),
        client.get(f"/scim/v2/Users?access_token={token}&count=1"),
        client.post("/scim/v2/Bulk", json={"schemas": [schema.BULK_REQUEST_URN], "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"userName": "b", "password": SECRET}},
            {"method": "PATCH", "path": path[len("/scim/v2"):], "data": patch_body(
                {"op": "replace", "path": f'password[value eq "{SECRET}"]', "value": "x"})},
        ]}),
    ]
    assert [r.status_code for r in exchanges] == [200, 200, 200, 200, 400, 400, 200, 200]
    assert SECRET in exchanges[4].text  # the error quotes the request: the capture must not
    assert glass_events(app)[1]["response"]["body"].count('"pw"') == 1  # the GET really was captured
    for stored in glass_events(app):
        text = orjson.dumps(stored).decode()
        assert SECRET not in text and token not in text, text
    store.close()


def test_a_crashing_handler_is_recorded_as_the_500_the_client_got(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The exchange that crashed is the one the operator wants to see, without the internals."""
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS="true")

    def crash(*args: Any) -> None:
        raise RuntimeError("boom: internals")

    monkeypatch.setattr(Directory, "get", crash)
    response = ScimClient(app).get("/scim/v2/Users/1")
    [event] = glass_events(app)
    assert response.status_code == event["status"] == 500
    assert event["response"]["body"] == response.text and "boom" not in response.text
    assert event["requestId"] == response.headers["X-Request-Id"]
    store.close()


@pytest.mark.parametrize(("headers", "status"), [
    ({"Authorization": "Bearer wrong-token"}, 401),  # refused before the body is read
    ({"Content-Type": "text/plain"}, 415),  # refused on its type, unread
])
def test_a_body_the_app_refused_unread_is_still_recorded_redacted(tmp_path: Path, headers: dict[str, str],
                                                                    status: int) -> None:
    """What the IdP sent is what the operator needs to see when scimd said no: read after the
    answer, and redacted like any other."""
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS="true")
    body = orjson.dumps({"schemas": [schema.USER_URN], "userName": "refused", "password": SECRET})
    response = ScimClient(app).post("/scim/v2/Users", data=body,
                                    headers={"Content-Type": "application/scim+json", **headers})
    [event] = glass_events(app)
    assert response.status_code == event["status"] == status
    assert orjson.loads(event["request"]["body"]) == {"schemas": [schema.USER_URN], "userName": "refused",
                                                      "password": R}
    store.close()


def test_head_is_recorded_without_the_body_it_did_not_send(tmp_path: Path) -> None:
    app, store = make_app(tmp_path, SCIM_LOOKING_GLASS="true")
    client = ScimClient(app)
    created = client.post("/scim/v2/Users", json={"schemas": [schema.USER_URN], "userName": "head"}).json
    response = client.head(f"/scim/v2/Users/{created['id']}")
    head = glass_events(app)[-1]
    assert response.status_code == head["status"] == 200 and response.data == b""
    assert head["method"] == "HEAD" and head["response"]["body"] is None and head["response"]["size"] == 0
    store.close()


def glass_events(app: LookingGlass) -> list[dict[str, Any]]:
    assert app.ring is not None
    return [orjson.loads(e.to_json()) for e in app.ring.since(0, lg.MAX_LIMIT)]
