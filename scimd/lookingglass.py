"""The Looking Glass core: what an exchange becomes once captured, redacted, and kept in memory.

Framework-free on purpose: the HTTP side (lookingglass_http) feeds it the WSGI environ and what
the app answered, and everything that decides what may be stored (redaction) or how it is kept
(the ring) lives here where it can be tested without a server.

Redaction happens before anything reaches the ring, so no secret ever sits in memory longer than
the request that carried it: `password` and every `returned: "never"` attribute of scimd.schema,
token-like keys and query parameters, and the configured API tokens wherever they appear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import secrets as _secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable, Mapping
from urllib.parse import quote, unquote_plus

import orjson

from scimd import schema

REDACTED = "[redacted]"
BODY_LIMIT = 64 * 1024  # bytes of each body kept; the rest is cut and the event says so
TICKET_TTL = 60  # seconds a stream ticket stays valid: long enough to open the stream, too short to reuse later
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

# Keys and query parameters that carry credentials in the wild (OAuth, API keys, our own stream ticket).
SECRET_KEYS = frozenset({
    "access_token", "refresh_token", "id_token", "token", "client_secret", "authorization",
    "api_key", "apikey", "ticket",
})


def _never_returned(attributes: Iterable[schema.Attribute]) -> set[str]:
    """Canonical names of the `returned: "never"` attributes and sub-attributes, at any depth."""
    names: set[str] = set()
    for attr in attributes:
        if attr.returned == "never":
            names.add(attr.name)
        names |= _never_returned(attr.sub_attributes)
    return names


# Derived from the schema so a new write-only attribute is redacted without touching this file.
_NEVER_RETURNED = _never_returned(a for s in (schema.COMMON, *schema.SCHEMAS.values()) for a in s.attributes)
SENSITIVE_NAMES = frozenset({"password"} | SECRET_KEYS | {name.lower() for name in _NEVER_RETURNED})


def _minimal(names: Iterable[str]) -> tuple[bytes, ...]:
    """Drop every name that contains another (access_token ⊃ token): it cannot match alone."""
    unique = set(names)
    return tuple(sorted(n.encode() for n in unique if not any(o != n and o in n for o in unique)))


# Substrings whose absence from a body proves it needs no redaction (see redact_body). A
# backslash is there because a JSON escape could spell a key without its plain bytes
# (p\u0061ssword); a single byte is found by memchr, far faster than `\u`.
_NAME_TRIGGERS = _minimal(SENSITIVE_NAMES)
_TRIGGERS = (*_NAME_TRIGGERS, b"\\")
_NAMES = tuple(t.decode() for t in _NAME_TRIGGERS)
# A percent-escape that decodes to a letter or `_`, the characters secret names are made of.
_ENCODED_NAME_CHAR = re.compile(r"%(?:[46][1-9a-f]|[57][0-9a]|5f)", re.IGNORECASE)
# scimd's own responses are serialised by orjson (no escaped keys). A successful one is a
# projection by scimd.resource, which drops `returned: never` attributes (and scimd keeps only a
# password's hash anyway), so only a token a client stored can be in it. An error detail may
# quote what the client sent, in an error response or inside a Bulk response: those are also
# searched for the secret attribute names, in the canonical case scimd writes them in, which needs
# no lowercase copy.
_RESPONSE_NAMES = tuple(name.encode() for name in sorted(_NEVER_RETURNED | {"password"}))
_LOOKAHEAD = 256  # a trigger straddling the 64 KiB cut must still be seen
_WINDOW = BODY_LIMIT + _LOOKAHEAD

_WORD = re.compile(r"[\w$-]+")
# Double-quoted (JSON, filters) or single-quoted (Python repr in the core's leniency notes).
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
# `attr op value` inside filter text, where attr may be URN-qualified or a sub-attribute.
_COMPARISON = re.compile(
    r'(?P<attr>[\w$:.-]+)(?P<op>\s+(?:eq|ne|co|sw|ew|gt|ge|lt|le)\s+)(?P<value>"(?:[^"\\]|\\.)*"|[^\s()\[\]]+)',
    re.IGNORECASE,
)
# An object naming its target in one of these (a PATCH op's `path`; a patch decision's `path`, or
# `attribute` for a no-path op) has the values under _PATCH_VALUE_KEYS redacted with the target.
_PATH_KEYS = ("path", "attribute")
_PATCH_VALUE_KEYS = ("value", "before", "after")
_QUERY_SAFE = "[]"  # keeps `[redacted]` legible in a stored query


@lru_cache(maxsize=4096)
def is_sensitive_path(path: str) -> bool:
    """True when an attribute path or key names a secret: `password`, `urn:...:User:password`,
    `name.password`, `emails[type eq "password"]` (over-redacting a look-alike is the safe error).

    Cached: the same few keys recur in every body, and this runs once per key.
    """
    return any(word in SENSITIVE_NAMES for word in _WORD.findall(path.lower()))


# Substring searches beat one regex alternation by several times (re scans per position), and a
# plain loop beats any() over a generator, whose frame costs more than searching a short body.
def _holds_any(haystack: str, needles: tuple[str, ...]) -> bool:
    for needle in needles:
        if needle in haystack:
            return True
    return False


def _bytes_hold_any(haystack: bytes, needles: tuple[bytes, ...]) -> bool:
    # find(), not `in`: on bytes, `in` first tries the needle as an int and discards the TypeError.
    for needle in needles:
        if haystack.find(needle) != -1:
            return True
    return False


def _mentions_sensitive(text: str) -> bool:
    return _holds_any(text.lower(), _NAMES)


@dataclass(frozen=True, slots=True)
class Secrets:
    """The configured API tokens in each form they could take in captured data, computed once
    so the per-request checks are plain substring searches."""

    texts: tuple[str, ...] = ()
    in_json: tuple[bytes, ...] = ()  # in a body as sent, or as orjson spells it inside a string
    quoted: tuple[str, ...] = ()  # percent-encoded in a query string
    # What a response that may quote the request is searched for: the secret names and in_json.
    in_response: tuple[bytes, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_response", _RESPONSE_NAMES + self.in_json)

    @classmethod
    def of(cls, tokens: Iterable[str]) -> Secrets:
        texts = tuple(dict.fromkeys(t for t in tokens if t))
        in_json = tuple(dict.fromkeys(form for t in texts for form in (t.encode(), orjson.dumps(t)[1:-1])))
        return cls(texts, in_json, tuple(quote(t, safe="") for t in texts))

    def found_in(self, text: str) -> bool:
        return _holds_any(text, self.texts)

    def scrub(self, text: str) -> str:
        """Replace every token that appears verbatim in `text`."""
        for secret in self.texts:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


NO_SECRETS = Secrets()


def _redact_comparison(match: re.Match[str]) -> str:
    if not is_sensitive_path(match["attr"]):
        return match[0]
    return f'{match["attr"]}{match["op"]}"{REDACTED}"'


def scrub_text(text: str, secrets: Secrets = NO_SECRETS) -> str:
    """Redact what a free-text string may leak: a filter's `password eq "x"` value, and, in any
    text that still names a secret attribute (a leniency note, a filter tree of unknown layout),
    every quoted literal."""
    text = secrets.scrub(text)
    if not _mentions_sensitive(text):
        return text
    text = _COMPARISON.sub(_redact_comparison, text)
    return _QUOTED.sub(lambda m: f"{m[0][0]}{REDACTED}{m[0][0]}", text)


def redact_json(obj: Any, secrets: Secrets = NO_SECRETS) -> Any:
    """A redacted copy of a JSON value; the input is never modified (it may be the core's live data).

    - a key naming a secret (any case, URN-qualified or dotted) has its value replaced;
    - an object whose `path` (or `attribute`) names a secret (a PATCH op, a patch decision) has
      its `value`, `before` and `after` replaced, whatever their shape;
    - strings are scrubbed of tokens and of secret filter values (scrub_text).
    """
    if isinstance(obj, dict):
        return _redact_object(obj, secrets)
    if isinstance(obj, (list, tuple)):
        return [redact_json(item, secrets) for item in obj]
    if isinstance(obj, str):
        return scrub_text(obj, secrets)
    return obj


def _redact_object(obj: dict[Any, Any], secrets: Secrets) -> dict[Any, Any]:
    secret_path = any(isinstance(obj.get(key), str) and is_sensitive_path(obj[key]) for key in _PATH_KEYS)
    redacted: dict[Any, Any] = {}
    for key, value in obj.items():
        name = key if isinstance(key, str) else str(key)
        if is_sensitive_path(name) or (secret_path and name.lower() in _PATCH_VALUE_KEYS):
            redacted[secrets.scrub(name)] = REDACTED
        else:
            redacted[secrets.scrub(name)] = redact_json(value, secrets)
    return redacted


def redact_decision(decision: dict[str, Any], secrets: Secrets = NO_SECRETS) -> dict[str, Any]:
    """A decision noted by the core, redacted like a body; in addition a filter that touches a
    secret attribute loses its SQL parameters, which are the compared values themselves."""
    redacted = redact_json(decision, secrets)
    if "params" in decision and any(
        isinstance(text, str) and _mentions_sensitive(text) for text in decision.values()
    ):
        params = decision["params"]
        redacted["params"] = [REDACTED] * len(params) if isinstance(params, (list, tuple)) else REDACTED
    return redacted


NO_DECISIONS = b"[]"


def redact_decisions(decisions: list[dict[str, Any]], secrets: Secrets = NO_SECRETS) -> bytes:
    """The decisions as a JSON array, redacted. Serialised here, on capture, so the event holds
    a snapshot rather than references into the core's live data; when the serialised form names
    no secret and holds no token (the usual case) it is kept without walking the decisions."""
    if not decisions:
        return NO_DECISIONS
    blob = _dump(decisions)
    if not _bytes_hold_any(blob.lower(), _NAME_TRIGGERS) and not _bytes_hold_any(blob, secrets.in_json):
        return blob
    return _dump([redact_decision(d, secrets) for d in decisions])


def _dump(value: Any) -> bytes:
    # default=str: a decision may carry a value orjson cannot encode (a Decimal, a set).
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def redact_query(qs: str, secrets: Secrets = NO_SECRETS) -> str:
    """The query string with credential parameters and secret filter values replaced.

    Parameters are edited in place, not re-encoded, so the operator sees what the IdP sent.
    A query that names no secret and holds no token is returned as is: that is nearly every
    query an IdP sends. Secret names are made of letters and `_`, so unless one of those is
    percent-encoded the raw query shows them, and decoding (slow, pure Python) is skipped.
    """
    if not qs:
        return qs
    visible = unquote_plus(qs) if "%" in qs and _ENCODED_NAME_CHAR.search(qs) else qs
    if not _mentions_sensitive(visible) and not _holds_token(qs, secrets):
        return qs
    parts = []
    for part in qs.split("&"):
        raw_key, eq, raw_value = part.partition("=")
        parts.append(raw_key + eq + _redact_param(unquote_plus(raw_key), raw_value, secrets))
    return secrets.scrub("&".join(parts))


def _holds_token(qs: str, secrets: Secrets) -> bool:
    return _holds_any(qs, secrets.texts) or _holds_any(qs, secrets.quoted)


def _redact_param(key: str, raw_value: str, secrets: Secrets) -> str:
    if is_sensitive_path(key):
        return quote(REDACTED, safe=_QUERY_SAFE)
    value = unquote_plus(raw_value)
    if secrets.found_in(value):
        return quote(REDACTED, safe=_QUERY_SAFE)
    scrubbed = scrub_text(value)
    return raw_value if scrubbed == value else quote(scrubbed, safe=_QUERY_SAFE)


@dataclass(slots=True)
class Body:
    """A body as kept: the redacted bytes (as sent, or re-serialised where redaction edited them),
    cut at BODY_LIMIT. Decoded only when someone reads the event. Not frozen: a frozen dataclass
    sets each field through object.__setattr__, several times slower, and one is made on every
    request; nothing assigns to a Body after redact_body made it."""

    data: bytes
    size: int
    truncated: bool

    def text(self) -> str | None:
        # "replace" shows a character split by the cut as U+FFFD instead of failing.
        return self.data.decode("utf-8", "replace") if self.size else None

    def to_json(self) -> dict[str, Any]:
        return {"body": self.text(), "size": self.size, "truncated": self.truncated}


NO_BODY = Body(b"", 0, False)


def redact_body(data: bytes, secrets: Secrets = NO_SECRETS, *, response: bool = False,
                quotes_client: bool = True) -> Body:
    """Redact a request or response body and cut it at BODY_LIMIT.

    The common case costs a few substring searches over the kept 64 KiB: a body holding no
    trigger and no token there is kept as sent, without a copy. Only the others are parsed,
    redacted structurally and re-serialised. A response, written by scimd itself, is searched
    only for what it could hold (see _RESPONSE_NAMES): tokens, and the secret attribute names
    unless it is a successful representation that cannot quote the client (`quotes_client`).
    """
    if not data:
        return NO_BODY
    window = data[:_WINDOW]  # the body itself, no copy, when it is shorter
    if response:
        clean = not _bytes_hold_any(window, secrets.in_response if quotes_client else secrets.in_json)
    else:
        clean = not _bytes_hold_any(window.lower(), _TRIGGERS) and not _bytes_hold_any(window, secrets.in_json)
    if clean:
        size = len(data)
        return Body(data, size, False) if size <= BODY_LIMIT else _cut(data, size)
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _redact_unparsable(data, secrets)
    return _cut(orjson.dumps(redact_json(document, secrets)), len(data))


def _redact_unparsable(data: bytes, secrets: Secrets) -> Body:
    # Without structure there is no telling which value belongs to a secret key: withhold it all.
    text = secrets.scrub(data.decode("utf-8", "replace"))
    if _mentions_sensitive(text):
        return Body(f"{REDACTED} (not valid JSON and names a secret attribute)".encode(), len(data), False)
    return _cut(text.encode(), len(data))


def _cut(data: bytes, size: int) -> Body:
    return Body(data[:BODY_LIMIT], size, len(data) > BODY_LIMIT)


# User-Agent substrings (lowercase) -> client, first match wins.
_AGENTS = (
    ("azure ad", "Entra"), ("azure active directory", "Entra"), ("entra", "Entra"), ("microsoft", "Entra"),
    ("okta", "Okta"),
    ("sailpoint", "SailPoint"), ("identitynow", "SailPoint"),
    ("onelogin", "OneLogin"),
    ("jumpcloud", "JumpCloud"),
    ("google", "Google"),
    ("pingfederate", "Ping"), ("pingone", "Ping"), ("ping identity", "Ping"),
    ("keycloak", "Keycloak"),
    ("authentik", "authentik"),
)
# Dialect cues in the body, for clients whose User-Agent is generic or absent.
_CAPITALISED_OP = re.compile(rb'"op"\s*:\s*"(?:Add|Replace|Remove)"')
_ADSCIM = b"schemas.microsoft.com/2006/11/resourcemanagement/adscim"
_SCIM1 = b"urn:scim:schemas:core:1.0"


def detect_client(user_agent: str, body: bytes, query: str) -> str:
    """Name the IdP behind a request: from its User-Agent, else from dialect cues (Entra's
    capitalised PATCH ops, `aadOptscim062020` flag and ADSCIM group schema; OneLogin's SCIM 1.0
    URNs), else the User-Agent's product token, else "unknown"."""
    agent = user_agent.lower()
    for needle, client in _AGENTS:
        if needle in agent:
            return client
    window = body[:BODY_LIMIT]
    lowered = window.lower()
    if "aadoptscim062020" in query.lower() or _CAPITALISED_OP.search(window) or _ADSCIM in lowered:
        return "Entra"
    if _SCIM1 in lowered:
        return "OneLogin"
    product = user_agent.split("/", 1)[0].split(" ", 1)[0].strip()
    return product[:32] or "unknown"


def resource_of(path: str) -> str:
    """The endpoint an exchange addressed (`Users`, `Groups`, `Bulk`, `Schemas`, ...), for filtering."""
    rest = path[len("/scim/v2"):].lstrip("/")
    return rest.split("/", 1)[0] or "root"


# The strings of an exchange, in the order Event.meta holds them, one per line. The path comes
# last: only it may hold a line feed (percent-decoded); header values and the rest cannot.
_META = ("client_address", "user_agent", "method", "request_type", "response_type", "request_id", "path")


@dataclass(slots=True)
class Event:
    """One exchange as kept in the ring, already redacted.

    Capture does only the redaction, on the request's thread; formatting, status parsing, client
    detection and JSON rendering wait for the first reader (and are cached), so an unwatched
    server pays nothing for them. Build events with capture(), which redacts.

    The exchange's seven strings are kept as one (`meta`, see _META): it is built anyway to search
    them for a token at once, and every object an event keeps is freed cold, when the event is
    overwritten hundreds of requests later, by a request that pays for it.
    """

    started: float  # epoch seconds
    duration_ms: float
    status: int
    meta: str
    query: str
    request: Body
    response: Body
    decisions: bytes  # a JSON array, see redact_decisions
    seq: int = 0  # set by EventRing.append
    _json: bytes | None = None

    @classmethod
    def capture(cls, environ: Mapping[str, Any], status: int, response_type: str, request_id: str, started: float,
                elapsed: float, request_body: bytes, response_body: bytes, decisions: list[dict[str, Any]],
                secrets: Secrets = NO_SECRETS) -> Event:
        """Redact one exchange: nothing un-redacted outlives this call.

        `environ` is the request's WSGI environ, of which only the CGI variables below are read
        (never a header but User-Agent and Content-Type); `status`, `response_type` and
        `request_id` are the answer's; `started` is the epoch time it began and `elapsed` its
        duration in seconds.

        Everything here runs on every request, where each bytecode shows in the cost: what is
        usually absent (a query, a request body, decisions, a token) is tested for inline.
        """
        path = environ.get("PATH_INFO", "")
        meta = (f"{environ.get('REMOTE_ADDR', '')}\n{environ.get('HTTP_USER_AGENT', '')}\n"
                f"{environ.get('REQUEST_METHOD', '')}\n{environ.get('CONTENT_TYPE', '')}\n"
                f"{response_type}\n{request_id}\n{path}")
        for token in secrets.texts:  # any of them may come from the client
            if token in meta:
                meta = secrets.scrub(meta)
                break
        query = environ.get("QUERY_STRING", "")
        # scimd's response may quote the request in an error's detail, or in a Bulk response, which
        # carries each failed operation's error inside a 200: see redact_body.
        quotes_client = status >= 300 or path.endswith("/Bulk")
        return cls(started, elapsed * 1000, status, meta, redact_query(query, secrets) if query else query,
                   redact_body(request_body, secrets) if request_body else NO_BODY,
                   redact_body(response_body, secrets, response=True, quotes_client=quotes_client),
                   redact_decisions(decisions, secrets) if decisions else NO_DECISIONS)

    def fields(self) -> dict[str, str]:
        """The strings kept in `meta`, by name."""
        return dict(zip(_META, self.meta.split("\n", len(_META) - 1)))

    def to_json(self) -> bytes:
        # Two readers may render at once; both produce the same bytes, so the race is harmless.
        if self._json is None:
            meta = self.fields()
            self._json = orjson.dumps({
                "seq": self.seq,
                "time": schema.format_datetime(datetime.fromtimestamp(self.started, timezone.utc)),
                "requestId": meta["request_id"] or None,
                "clientAddress": meta["client_address"],
                "userAgent": meta["user_agent"],
                "client": detect_client(meta["user_agent"], self.request.data, self.query),
                "method": meta["method"],
                "path": meta["path"],
                "query": self.query,
                "resource": resource_of(meta["path"]),
                "status": self.status,
                "durationMs": round(self.duration_ms, 3),
                "request": {"contentType": meta["request_type"], **self.request.to_json()},
                "response": {"contentType": meta["response_type"], **self.response.to_json()},
                "decisions": orjson.Fragment(self.decisions),
            })
        return self._json


class EventRing:
    """The last `capacity` events, each numbered by a sequence that never repeats.

    A fixed list indexed by seq % capacity, appended to without a lock: under the GIL,
    next(itertools.count) and a list item assignment are each atomic, and a lock (let alone a
    Condition's notify_all) would cost a request more than the rest of its append. So a reader
    never holds up a request, however slow. The price is on the readers' side: two requests may
    number their events 5 and 6 and store them in the other order, so a reader stops at the first
    number not stored yet rather than skip it (see _collect).

    A Condition wakes the streams waiting in wait_since(); an append touches it only when one is.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slots: list[Event | None] = [None] * capacity
        self._numbers = itertools.count(1)
        self._newest = 0  # a hint for last_seq: the last number stored, possibly by a slower request
        self._closed = False
        self._changed = threading.Condition(threading.Lock())
        self._waiting = 0  # streams inside wait_since(); changed under the Condition's lock

    @property
    def last_seq(self) -> int:
        """The newest number stored, as far as a reader can tell without a lock: the one the last
        append to finish stored, or any stored in sequence after it."""
        seq = self._newest
        while self._holds(seq + 1):
            seq += 1
        return seq

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiter for good, so a shutting-down server does not wait out open streams."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def append(self, event: Event) -> int:
        seq = event.seq = next(self._numbers)
        self._slots[seq % self.capacity] = event
        self._newest = seq
        # Read after the store: a stream that starts waiting later sees the event when it checks
        # for one under the lock, and one that is already waiting is counted here.
        if self._waiting:
            with self._changed:
                self._changed.notify_all()
        return seq

    def since(self, seq: int, limit: int = DEFAULT_LIMIT) -> list[Event]:
        """Up to `limit` events with a sequence number above `seq`, oldest first."""
        return self._collect(seq, limit)

    def wait_since(self, seq: int, timeout: float, limit: int = DEFAULT_LIMIT) -> list[Event]:
        """Like since(), but blocks up to `timeout` seconds for an event to arrive (or close())."""
        with self._changed:
            self._waiting += 1
            try:
                self._changed.wait_for(lambda: self._closed or self._holds(seq + 1, or_later=True), timeout)
            finally:
                self._waiting -= 1
        return self._collect(seq, limit)

    def _holds(self, seq: int, *, or_later: bool = False) -> bool:
        """Whether event `seq` is stored (or, with or_later, a later one that took its slot)."""
        event = self._slots[seq % self.capacity]
        return event is not None and (event.seq == seq or (or_later and event.seq > seq))

    def _collect(self, seq: int, limit: int) -> list[Event]:
        events: list[Event] = []
        number = max(seq + 1, 1)
        while len(events) < limit:
            event = self._slots[number % self.capacity]
            if event is None or event.seq < number:
                break  # not stored yet: stop here, or this reader would never see it
            if event.seq > number:
                # The ring has gone round past `number`: resume at the oldest event it can still hold.
                number = event.seq - self.capacity + 1
                continue
            events.append(event)
            number += 1
        return events


class TicketSigner:
    """Short-lived stream tickets, because EventSource cannot send an Authorization header and a
    token must never travel in a URL. Stateless: an HMAC under a key that dies with the process."""

    def __init__(self, ttl: int = TICKET_TTL) -> None:
        self.ttl = ttl
        self._key = _secrets.token_bytes(32)

    def issue(self) -> tuple[str, str]:
        """A new ticket and its expiry as an RFC 3339 time."""
        expires = int(time.time()) + self.ttl
        payload = f"{expires}.{_secrets.token_urlsafe(9)}"
        when = schema.format_datetime(datetime.fromtimestamp(expires, timezone.utc))
        return f"{payload}.{self._sign(payload)}", when

    def verify(self, ticket: str) -> bool:
        payload, _, signature = ticket.rpartition(".")
        expires = payload.partition(".")[0]
        if not expires.isdigit() or not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return False
        return time.time() < int(expires)

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
