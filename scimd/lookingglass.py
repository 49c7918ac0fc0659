"""The Looking Glass core: what an exchange becomes once captured, redacted, and kept in memory.

Framework-free on purpose: the HTTP side (lookingglass_http) feeds it raw bytes and strings, and
everything that decides what may be stored (redaction) or how it is kept (the ring) lives here
where it can be tested without a server.

Redaction happens before anything reaches the ring, so no secret ever sits in memory longer than
the request that carried it: `password` and every `returned: "never"` attribute of scimd.schema,
token-like keys and query parameters, and the configured API tokens wherever they appear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets as _secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable, Sequence
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
    names: set[str] = set()
    for attr in attributes:
        if attr.returned == "never":
            names.add(attr.name.lower())
        names |= _never_returned(attr.sub_attributes)
    return names


# Derived from the schema so a new write-only attribute is redacted without touching this file.
SENSITIVE_NAMES = frozenset(
    {"password"} | SECRET_KEYS | _never_returned(a for s in (schema.COMMON, *schema.SCHEMAS.values()) for a in s.attributes)
)

# Substrings whose absence from a body proves it needs no redaction (see redact_body). A name
# containing another (access_token ⊃ token) adds nothing; `\u` is there because a JSON escape
# could spell a sensitive key without its plain bytes (p\u0061ssword).
_TRIGGERS = tuple(sorted(
    {n.encode() for n in SENSITIVE_NAMES if not any(o != n and o in n for o in SENSITIVE_NAMES)} | {b"\\u"}
))
_LOOKAHEAD = 256  # a trigger straddling the 64 KiB cut must still be seen

_WORD = re.compile(r"[\w$-]+")
# Double-quoted (JSON, filters) or single-quoted (Python repr in the core's leniency notes).
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
# `attr op value` inside filter text, where attr may be URN-qualified or a sub-attribute.
_COMPARISON = re.compile(
    r'(?P<attr>[\w$:.-]+)(?P<op>\s+(?:eq|ne|co|sw|ew|gt|ge|lt|le)\s+)(?P<value>"(?:[^"\\]|\\.)*"|[^\s()\[\]]+)',
    re.IGNORECASE,
)
_PATCH_VALUE_KEYS = ("value", "before", "after")
_QUERY_SAFE = "[]"  # keeps `[redacted]` legible in a stored query


@lru_cache(maxsize=4096)
def is_sensitive_path(path: str) -> bool:
    """True when an attribute path or key names a secret: `password`, `urn:...:User:password`,
    `name.password`, `emails[type eq "password"]` (over-redacting a look-alike is the safe error).

    Cached: the same few keys recur in every body, and this runs once per key.
    """
    return any(word in SENSITIVE_NAMES for word in _WORD.findall(path.lower()))


def _mentions_sensitive(text: str) -> bool:
    lowered = text.lower()
    return any(name in lowered for name in SENSITIVE_NAMES)


def scrub_secrets(text: str, secrets: Sequence[str]) -> str:
    """Replace every configured token that appears verbatim in `text`."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_comparison(match: re.Match[str]) -> str:
    if not is_sensitive_path(match["attr"]):
        return match[0]
    return f'{match["attr"]}{match["op"]}"{REDACTED}"'


def scrub_text(text: str, secrets: Sequence[str] = ()) -> str:
    """Redact what a free-text string may leak: a filter's `password eq "x"` value, and, in any
    text that still names a secret attribute (a leniency note, a filter tree of unknown layout),
    every quoted literal."""
    text = scrub_secrets(text, secrets)
    if not _mentions_sensitive(text):
        return text
    text = _COMPARISON.sub(_redact_comparison, text)
    return _QUOTED.sub(lambda m: f"{m[0][0]}{REDACTED}{m[0][0]}", text)


def redact_json(obj: Any, secrets: Sequence[str] = ()) -> Any:
    """A redacted copy of a JSON value; the input is never modified (it may be the core's live data).

    - a key naming a secret (any case, URN-qualified or dotted) has its value replaced;
    - an object whose `path` names a secret (a PATCH op, a patch decision) has its `value`,
      `before` and `after` replaced, whatever their shape;
    - strings are scrubbed of tokens and of secret filter values (scrub_text).
    """
    if isinstance(obj, dict):
        return _redact_object(obj, secrets)
    if isinstance(obj, (list, tuple)):
        return [redact_json(item, secrets) for item in obj]
    if isinstance(obj, str):
        return scrub_text(obj, secrets)
    return obj


def _redact_object(obj: dict[Any, Any], secrets: Sequence[str]) -> dict[Any, Any]:
    path = obj.get("path")
    secret_path = isinstance(path, str) and is_sensitive_path(path)
    redacted: dict[Any, Any] = {}
    for key, value in obj.items():
        name = key if isinstance(key, str) else str(key)
        if is_sensitive_path(name) or (secret_path and name.lower() in _PATCH_VALUE_KEYS):
            redacted[scrub_secrets(name, secrets)] = REDACTED
        else:
            redacted[scrub_secrets(name, secrets)] = redact_json(value, secrets)
    return redacted


def redact_decision(decision: dict[str, Any], secrets: Sequence[str] = ()) -> dict[str, Any]:
    """A decision noted by the core, redacted like a body; in addition a filter that touches a
    secret attribute loses its SQL parameters, which are the compared values themselves."""
    redacted = redact_json(decision, secrets)
    if "params" in decision and any(
        isinstance(text, str) and _mentions_sensitive(text) for text in decision.values()
    ):
        params = decision["params"]
        redacted["params"] = [REDACTED] * len(params) if isinstance(params, (list, tuple)) else REDACTED
    return redacted


def redact_query(qs: str, secrets: Sequence[str] = ()) -> str:
    """The query string with credential parameters and secret filter values replaced.

    Parameters are edited in place, not re-encoded, so the operator sees what the IdP sent.
    """
    if not qs:
        return qs
    parts = []
    for part in qs.split("&"):
        raw_key, eq, raw_value = part.partition("=")
        parts.append(raw_key + eq + _redact_param(unquote_plus(raw_key), raw_value, secrets))
    return scrub_secrets("&".join(parts), secrets)


def _redact_param(key: str, raw_value: str, secrets: Sequence[str]) -> str:
    if is_sensitive_path(key):
        return quote(REDACTED, safe=_QUERY_SAFE)
    value = unquote_plus(raw_value)
    if any(secret and secret in value for secret in secrets):
        return quote(REDACTED, safe=_QUERY_SAFE)
    scrubbed = scrub_text(value)
    return raw_value if scrubbed == value else quote(scrubbed, safe=_QUERY_SAFE)


@dataclass(frozen=True, slots=True)
class Body:
    """A body as stored: redacted text (JSON as sent, or re-serialised when redaction edited it)."""

    text: str | None
    size: int
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {"body": self.text, "size": self.size, "truncated": self.truncated}


def redact_body(data: bytes, secrets: Sequence[str] = ()) -> Body:
    """Redact a request or response body and cut it at BODY_LIMIT.

    The common case costs one lowercase copy of the first 64 KiB and a few substring searches:
    a body whose kept part holds no trigger and no token is stored as sent. Only the others are
    parsed, redacted structurally and re-serialised.
    """
    if not data:
        return Body(None, 0, False)
    window = data[:BODY_LIMIT + _LOOKAHEAD]
    lowered = window.lower()
    if not any(t in lowered for t in _TRIGGERS) and not any(s and s.encode() in window for s in secrets):
        return _cut(data, len(data))
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _redact_unparsable(data, secrets)
    return _cut(orjson.dumps(redact_json(document, secrets)), len(data))


def _redact_unparsable(data: bytes, secrets: Sequence[str]) -> Body:
    # Without structure there is no telling which value belongs to a secret key: withhold it all.
    text = scrub_secrets(data.decode("utf-8", "replace"), secrets)
    if _mentions_sensitive(text):
        return Body(f"{REDACTED} (not valid JSON and names a secret attribute)", len(data), False)
    return _cut(text.encode(), len(data))


def _cut(data: bytes, size: int) -> Body:
    # "replace" shows a character split by the cut as U+FFFD instead of failing.
    return Body(data[:BODY_LIMIT].decode("utf-8", "replace"), size, len(data) > BODY_LIMIT)


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


@dataclass(slots=True)
class Exchange:
    """What the HTTP layer observed, raw; build_event turns it into a stored event."""

    time: str
    client_address: str
    user_agent: str
    method: str
    path: str
    query: str
    request_type: str
    request_body: bytes
    status: int = 0
    duration_ms: float = 0.0
    request_id: str | None = None
    response_type: str = ""
    response_body: bytes = b""
    decisions: list[dict[str, Any]] = field(default_factory=list)


def build_event(x: Exchange, secrets: Sequence[str] = ()) -> bytes:
    """The event as JSON bytes without its `seq` (the ring assigns it): serialised once here so
    readers never redo the work and nothing mutable is shared with the request."""
    user_agent = scrub_secrets(x.user_agent, secrets)
    return orjson.dumps({
        "time": x.time,
        "requestId": x.request_id,
        "clientAddress": x.client_address,
        "userAgent": user_agent,
        "client": detect_client(user_agent, x.request_body, x.query),
        "method": x.method,
        "path": scrub_secrets(x.path, secrets),
        "query": redact_query(x.query, secrets),
        "resource": resource_of(x.path),
        "status": x.status,
        "durationMs": round(x.duration_ms, 3),
        "request": {"contentType": x.request_type, **redact_body(x.request_body, secrets).to_json()},
        "response": {"contentType": x.response_type, **redact_body(x.response_body, secrets).to_json()},
        "decisions": [redact_decision(d, secrets) for d in x.decisions],
    }, default=str, option=orjson.OPT_NON_STR_KEYS)


def event_json(seq: int, payload: bytes) -> bytes:
    """Splice the sequence number into a stored payload (`{...}` from build_event)."""
    return b'{"seq":%d,%s' % (seq, payload[1:])


class EventRing:
    """The last `capacity` events, each numbered by a sequence that never repeats.

    A fixed list indexed by seq % capacity rather than a deque: appending and reading any slice
    are O(1) per event, and the lock is held only to touch the slots, never during I/O.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slots: list[bytes] = [b""] * capacity
        self._seq = 0
        self._closed = False
        self._changed = threading.Condition(threading.Lock())

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiter for good, so a shutting-down server does not wait out open streams."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def append(self, payload: bytes) -> int:
        with self._changed:
            self._seq += 1
            self._slots[self._seq % self.capacity] = payload
            self._changed.notify_all()
            return self._seq

    def since(self, seq: int, limit: int = DEFAULT_LIMIT) -> list[tuple[int, bytes]]:
        """Up to `limit` events with a sequence number above `seq`, oldest first."""
        with self._changed:
            return self._slice(seq, limit)

    def wait_since(self, seq: int, timeout: float, limit: int = DEFAULT_LIMIT) -> list[tuple[int, bytes]]:
        """Like since(), but blocks up to `timeout` seconds for an event to arrive (or close())."""
        with self._changed:
            self._changed.wait_for(lambda: self._seq > seq or self._closed, timeout)
            return self._slice(seq, limit)

    def _slice(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        first = max(seq + 1, self._seq - self.capacity + 1, 1)
        last = min(self._seq, first + limit - 1)
        return [(n, self._slots[n % self.capacity]) for n in range(first, last + 1)]


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
