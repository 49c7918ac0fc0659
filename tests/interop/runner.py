"""Replay an identity provider's request sequence, kept as data, against a running scimd.

A scenario file (`tests/interop/<client>.json`) is one JSON object:

    {"client": "Okta",                           # named in every failure
     "headers": {"User-Agent": "...", ...},      # sent with every request unless a step overrides
     "random": ["rnd", ...],                     # each becomes a fresh UUID for this run
     "steps": [step, ...]}

A step is one HTTP request and what must come back:

    {"name": "O8 duplicate create -> 409",       # the idp-dialects.md item it replays
     "method": "POST", "path": "/Users?...",     # path relative to /scim/v2 (see "URLs" below)
     "headers": {...},                           # merged over the scenario's headers
     "token": "..." | null,                      # absent: the test token; null: no Authorization
     "body": <JSON>,                             # sent as application/scim+json unless headers say otherwise
     "status": 409 | [200, 204],
     "maxMs": 600,                               # the response must come within this time (Okta O10)
     "expect": ["<assertion>", ...],
     "save": {"var": "<path>"},                  # capture a body value for later `{var}`
     "repeat": 20, "parallel": true,             # run N times (`{i}` = 0..N-1), concurrently if parallel;
                                                 # `save` then collects a list, used as `{var[i]}`
     "knownGap": "why"}                          # scimd does not do this yet: the step must fail (it is
                                                 # reported, and the run goes on); passing fails the run,
                                                 # so the marker is removed when the gap is closed. Such
                                                 # a step saves nothing: keep it to the one check

or a paging walk, which follows startIndex until totalResults and checks every page:

    {"name": "...", "paginate": "/Users?count=100", "includes": "<list var>"}

Placeholders `{var}`, `{var[i]}`, `{var[3]}`, `{var|upper}` and `{i}` are replaced in every string
of a step but its name before it runs; an unknown name fails the step (a typo must not pass silently).

URLs: the path is sent as written except that characters not allowed in a URL (space, `"`) are
percent-encoded, so `+` stays a `+` (a space to the server: OL3) and `%2B` must be written for a
literal plus.

Assertions, one per string (`<path>` as below; `<json>` is a JSON literal):

    <path> == <json>    <path> != <json>    <path> > <json>   (also >=, <, <=)
    <path> contains <json>        string contains substring, or array contains an equal element
    <path> length == <n>          length of an array, string or object (any comparison operator)
    <path> exists                 present and not null          <path> absent    missing or null
    has <path>                    the key is present (even null)  not has <path>   the key is missing
    <path> is number|string|boolean|array|object|null

Paths: `name`, `.name`, `[0]`, `["urn:...:2.0:User"]` (keys with dots), and `[?key==<json>]`,
which selects THE element of an array whose `key` equals the literal (none: missing; more than
one: a failure, as clients assume one element per type, idp-dialects E33). Keys are matched
exactly: responses must use the schema's canonical case.

Equality is JSON equality (`true` is not `1`). Every response with a body must be
`application/scim+json` without a null anywhere (E30, X25), every 201 must carry a Location equal
to meta.location (X15), and every error must be a SCIM Error with the status as a string (X8).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlsplit

BASE_PATH = "/scim/v2"
ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"
_MISSING = object()

_STRING = r'"(?:[^"\\]|\\.)*"'
_NAME = r"[A-Za-z_$][\w$-]*"
_SCALAR = rf"(?:{_STRING}|-?\d+(?:\.\d+)?|true|false|null)"
_SEGMENT = re.compile(rf'\.({_NAME})|\[(\d+)\]|\[({_STRING})\]|\[\?({_NAME})==({_SCALAR})\]')
_HEAD = re.compile(rf'({_NAME})|\[({_STRING})\]')
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)(?:\[(i|\d+)\])?(\|upper)?\}")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: _same(a, b), "!=": lambda a, b: not _same(a, b),
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}
_TYPES: dict[str, Callable[[Any], bool]] = {
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list), "object": lambda v: isinstance(v, dict), "null": lambda v: v is None,
}


class StepFailure(AssertionError):
    """A step did not get what the client expects; the message names client, step and difference."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw: bytes
    body: Any = None

    def describe(self) -> str:
        text = self.raw.decode("utf-8", "replace")
        return f"response {self.status}: {text[:2000] or '(no body)'}"


@dataclass
class Server:
    """Where requests go: the daemon's base URL and the token the test configured."""

    base: str
    token: str
    created: list[str] = field(default_factory=list)

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Response:
        parts = urlsplit(self.base)
        # One connection per request: parallel steps share nothing, and a reset costs one request.
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request(method, BASE_PATH + _encode_url(path), body=body, headers=headers)
            reply = conn.getresponse()
            response = Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
        finally:
            conn.close()
        if response.status == 201 and "location" in response.headers:
            self.created.append(urlsplit(response.headers["location"]).path.removeprefix(BASE_PATH))
        return response

    def count(self, resource: str) -> int:
        response = self.send("GET", f"/{resource}?count=0", self.auth(), None)
        return int(json.loads(response.raw)["totalResults"])

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def load(path: Path) -> dict[str, Any]:
    scenario = json.loads(path.read_text(encoding="utf-8"))
    if not scenario.get("client") or not scenario.get("steps"):
        raise ValueError(f"{path.name}: a scenario needs 'client' and 'steps'")
    return scenario


@dataclass
class Outcome:
    requests: int = 0
    gaps: list[str] = field(default_factory=list)  # the failures of the steps marked knownGap


def run(server: Server, scenario: dict[str, Any]) -> Outcome:
    """Run every step in order. The user and group counts must be back where they started:
    each scenario deletes what it created."""
    before = server.count("Users"), server.count("Groups")
    variables: dict[str, Any] = {name: str(uuid.uuid4()) for name in scenario.get("random", [])}
    server.created.clear()
    outcome = Outcome()
    try:
        for index, step in enumerate(scenario["steps"], 1):
            try:
                outcome.requests += _run_step(server, scenario, index, step, variables)
            except StepFailure as failure:
                if "knownGap" not in step:
                    raise
                outcome.gaps.append(f"{failure}\n  known gap: {step['knownGap']}")
            else:
                if "knownGap" in step:
                    raise StepFailure(f"[{scenario['client']}] step {index} {step.get('name')!r} passes now: "
                                      f"remove its knownGap marker ({step['knownGap']})")
    except StepFailure:
        _remove_leftovers(server)  # so one failed scenario cannot break the next one's counts
        raise
    after = server.count("Users"), server.count("Groups")
    if after != before:
        _remove_leftovers(server)
        raise StepFailure(f"[{scenario['client']}] left the directory changed: (users, groups) "
                          f"{before} before, {after} after; its last steps must delete what it created")
    return outcome


def _remove_leftovers(server: Server) -> None:
    for path in reversed(server.created):
        server.send("DELETE", path, server.auth(), None)


def _run_step(server: Server, scenario: dict[str, Any], index: int, step: dict[str, Any],
              variables: dict[str, Any]) -> int:
    label = f"[{scenario['client']}] step {index} {step.get('name', '(unnamed)')!r}"
    if "paginate" in step:
        return _paginate(server, scenario, label, _prepare(step, variables, None, label), variables)

    def one(i: int | None) -> dict[str, Any]:
        where = label if i is None else f"{label} (repeat {i})"
        concrete = _prepare(step, variables, i, where)
        response, fail = _exchange(server, scenario, where, concrete)
        saved = {}
        for name, path in concrete.get("save", {}).items():
            value = resolve(path, response.body)
            if value is _MISSING or value is None:
                raise fail(f"cannot save {name!r}: nothing at {path}")
            saved[name] = value
        return saved

    times = step.get("repeat", 1)
    if "repeat" not in step:
        results = [one(None)]
    elif step.get("parallel"):
        with ThreadPoolExecutor(max_workers=min(times, 32)) as pool:
            results = list(pool.map(one, range(times)))
    else:
        results = [one(i) for i in range(times)]
    for name in step.get("save", {}):
        values = [saved[name] for saved in results]
        variables[name] = values if "repeat" in step else values[0]
    return times


def _exchange(server: Server, scenario: dict[str, Any], label: str,
              step: dict[str, Any]) -> tuple[Response, Callable[[str], StepFailure]]:
    """Send one request and check status, invariants and assertions; return the response and
    a function that words a later failure of the same exchange."""
    headers = {**scenario.get("headers", {}), **step.get("headers", {})}
    token = step.get("token", server.token)
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    body: bytes | None = None
    if "body" in step:
        body = json.dumps(step["body"]).encode()
        headers.setdefault("Content-Type", "application/scim+json")
    started = time.perf_counter()
    response = server.send(step["method"], step["path"], headers, body)
    elapsed_ms = (time.perf_counter() - started) * 1000
    where = f"{label}\n  request: {step['method']} {BASE_PATH}{step['path']}" + (
        f" {body.decode()[:2000]}" if body else "")

    def fail(difference: str) -> StepFailure:
        return StepFailure(f"{where}\n  {difference}\n  {response.describe()}")

    expected = step["status"] if isinstance(step["status"], list) else [step["status"]]
    if response.status not in expected:
        raise fail(f"expected status {' or '.join(map(str, expected))}, got {response.status}")
    if elapsed_ms > step.get("maxMs", float("inf")):
        raise fail(f"expected a response within {step['maxMs']} ms, took {elapsed_ms:.0f} ms")
    if response.raw:
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("application/scim+json"):
            raise fail(f"expected Content-Type application/scim+json, got {content_type!r}")
        try:
            response.body = json.loads(response.raw)
        except ValueError:
            raise fail("the body is not JSON") from None
    if _has_null(response.body):
        raise fail("null in the body: empty values are omitted or [], never null (X25)")
    if response.status == 201 and response.headers.get("location") != resolve("meta.location", response.body):
        raise fail(f"the Location header {response.headers.get('location')!r} is not meta.location (X15)")
    if response.status >= 400:
        error = response.body if isinstance(response.body, dict) else {}
        if ERROR_URN not in error.get("schemas", []) or error.get("status") != str(response.status):
            raise fail(f"expected a SCIM Error with \"status\": \"{response.status}\"")
    for assertion in step.get("expect", []):
        try:
            problem = check(assertion, response.body)
        except StepFailure as exc:  # an ambiguous [?key==value] selection
            problem = str(exc)
        except (ValueError, KeyError, IndexError) as exc:
            raise fail(f"cannot read the assertion {assertion!r}: {exc!r}") from None
        if problem:
            raise fail(f"expected: {assertion}\n  actual: {problem}")
    return response, fail


def _paginate(server: Server, scenario: dict[str, Any], label: str, step: dict[str, Any],
              variables: dict[str, Any]) -> int:
    """Page like Okta's import: startIndex += count until totalResults; every page must agree
    with the others, and together they hold every resource once (idp-dialects O19, X13)."""
    seen: list[str] = []
    start, total, pages = 1, None, 0
    while total is None or start <= total:
        pages += 1
        separator = "&" if "?" in step["paginate"] else "?"
        page = {"method": "GET", "path": f"{step['paginate']}{separator}startIndex={start}", "status": 200,
                "expect": [f"startIndex == {start}", "Resources is array", "totalResults is number",
                           "itemsPerPage is number"]}
        response, fail = _exchange(server, scenario, f"{label} (startIndex={start})", page)
        body = response.body
        if body["itemsPerPage"] != len(body["Resources"]):
            raise fail(f"itemsPerPage {body['itemsPerPage']} for {len(body['Resources'])} Resources")
        if not body["Resources"] and start <= body["totalResults"]:
            raise fail("an empty page before totalResults was reached")
        if total is not None and body["totalResults"] != total:
            raise fail(f"totalResults changed from {total} while paging")
        total = body["totalResults"]
        seen.extend(resource["id"] for resource in body["Resources"])
        start += len(body["Resources"]) or 1
    duplicates = sorted({rid for rid in seen if seen.count(rid) > 1})
    missing = sorted(set(variables.get(step.get("includes", ""), [])) - set(seen))
    if duplicates or missing or len(seen) != total:
        raise StepFailure(f"{label}\n  walked {len(seen)} resources for totalResults {total}; "
                          f"duplicates: {duplicates[:10]}; missing: {missing[:10]}")
    return pages


# -- placeholders ------------------------------------------------------------------------


def _prepare(step: dict[str, Any], variables: dict[str, Any], i: int | None, label: str) -> dict[str, Any]:
    """The step with its placeholders filled in; its prose (name, knownGap) is left as written.
    In assertions a value lands inside a JSON string literal, so it is escaped as one (W/"1")."""
    return {key: value if key in ("name", "knownGap") else _substitute(
        value, partial(_lookup, variables=variables, i=i, label=label, escape=key == "expect"))
        for key, value in step.items()}


def _substitute(value: Any, replace: Callable[[re.Match[str]], str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(item, replace) for item in value]
    if isinstance(value, dict):
        return {key: _substitute(item, replace) for key, item in value.items()}
    return value


def _lookup(match: re.Match[str], variables: dict[str, Any], i: int | None, label: str, escape: bool) -> str:
    name, index, upper = match.groups()
    if name == "i" and i is not None:
        value: Any = i
    elif name not in variables:
        raise StepFailure(f"{label}: unknown placeholder {match.group(0)} (not saved by an earlier step)")
    else:
        value = variables[name]
        if index == "i" and i is None:
            raise StepFailure(f"{label}: {match.group(0)} outside a repeated step")
        if index is not None:
            value = value[i if index == "i" else int(index)]
    text = str(value).upper() if upper else str(value)
    return json.dumps(text)[1:-1] if escape else text


def _encode_url(path: str) -> str:
    # Keep what the scenario wrote (`+`, `%xx`, `&`, trailing `?`); encode only what HTTP forbids.
    return quote(path, safe="/?&=+%:@,;$!*'()~[]")


# -- assertions ----------------------------------------------------------------------------


def check(assertion: str, body: Any) -> str | None:
    """None if the assertion holds, else what was found instead."""
    text = assertion.strip()
    negated_has = text.startswith("not has ")
    if negated_has or text.startswith("has "):
        path, _ = _parse_path(text.removeprefix("not has ").removeprefix("has "))
        present = resolve(path, body) is not _MISSING
        return None if present != negated_has else _show(resolve(path, body))
    path, rest = _parse_path(text)
    value = resolve(path, body)
    words = rest.split(None, 1)
    if not words:
        raise ValueError(f"assertion {assertion!r}: nothing after the path")
    if words[0] == "exists":
        return None if value is not _MISSING and value is not None else _show(value)
    if words[0] == "absent":
        return None if value is _MISSING or value is None else _show(value)
    if words[0] == "is":
        return None if value is not _MISSING and _TYPES[words[1]](value) else _show(value)
    if words[0] == "length":
        operator, literal = words[1].split(None, 1)
        if not isinstance(value, (list, str, dict)):
            return _show(value)
        return None if _COMPARE[operator](len(value), json.loads(literal)) else f"length {len(value)}: {_show(value)}"
    operator, literal = words[0], json.loads(words[1])
    if value is _MISSING:
        return "(missing)"
    if operator == "contains":
        found = literal in value if isinstance(value, str) else any(_same(item, literal) for item in value)
        return None if found else _show(value)
    try:
        return None if _COMPARE[operator](value, literal) else _show(value)
    except TypeError:
        return _show(value)


def _parse_path(text: str) -> tuple[str, str]:
    """Split `<path> <rest>` at the end of the path (which may itself hold `==` inside `[?...]`)."""
    head = _HEAD.match(text)
    if not head:
        raise ValueError(f"bad path at {text!r}")
    end = head.end()
    while (segment := _SEGMENT.match(text, end)) is not None:
        end = segment.end()
    return text[:end], text[end:].strip()


def resolve(path: str, body: Any) -> Any:
    """The value at `path` in `body`, or _MISSING."""
    head = _HEAD.match(path)
    assert head is not None
    value = _child(body, head.group(1) or json.loads(head.group(2)))
    end = head.end()
    while end < len(path) and value is not _MISSING:
        segment = _SEGMENT.match(path, end)
        if segment is None:
            raise ValueError(f"bad path {path!r} at {path[end:]!r}")
        name, position, quoted, key, literal = segment.groups()
        if position is not None:
            value = value[int(position)] if isinstance(value, list) and int(position) < len(value) else _MISSING
        elif key is not None:
            value = _select(value, key, json.loads(literal), path)
        else:
            value = _child(value, name or json.loads(quoted))
        end = segment.end()
    return value


def _child(value: Any, key: str) -> Any:
    return value[key] if isinstance(value, dict) and key in value else _MISSING


def _select(value: Any, key: str, literal: Any, path: str) -> Any:
    if not isinstance(value, list):
        return _MISSING
    matches = [item for item in value if isinstance(item, dict) and _same(item.get(key, _MISSING), literal)]
    if len(matches) > 1:
        raise StepFailure(f"{path}: {len(matches)} elements match, clients assume one: {_show(value)}")
    return matches[0] if matches else _MISSING


def _has_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(item is None or _has_null(item) for item in value.values())
    if isinstance(value, list):
        return any(item is None or _has_null(item) for item in value)
    return False


def _same(a: Any, b: Any) -> bool:
    if a is _MISSING or b is _MISSING:
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _show(value: Any) -> str:
    return "(missing)" if value is _MISSING else json.dumps(value)[:500]
