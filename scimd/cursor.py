"""Opaque, tamper-evident cursors for RFC 9865 paging.

A cursor carries the sort key of the last resource returned (keyset paging, so it stays
stable while other clients insert and delete), a digest of the query it belongs to, and its
issue time, signed with a key kept in the database so cursors survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson

from scimd import errors


def query_digest(*parts: Any) -> str:
    """Binds a cursor to its resource types, filter and sort order."""
    return hashlib.sha256(orjson.dumps(parts, default=str)).hexdigest()[:32]


def encode(key: str, digest: str, last_key: tuple[Any, ...]) -> str:
    payload = orjson.dumps({"q": digest, "k": list(last_key), "t": int(time.time())})
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    return (body + b"." + _sign(key, body)).decode("ascii")


def decode(key: str, token: str, digest: str, timeout: int) -> tuple[Any, ...]:
    """The sort key a cursor continues after; invalidCursor or expiredCursor (RFC 9865 §6) otherwise."""
    body, dot, signature = token.encode("ascii", "replace").partition(b".")
    if not dot or not hmac.compare_digest(signature, _sign(key, body)):
        raise errors.InvalidCursor("The cursor is not one this server issued.")
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise errors.InvalidCursor("The cursor is malformed.") from None
    if payload.get("q") != digest:
        raise errors.InvalidCursor("The cursor belongs to a different query (filter, sort or resource type).")
    if time.time() - payload.get("t", 0) > timeout:
        raise errors.ExpiredCursor(f"The cursor is older than {timeout} seconds; start again with cursor=.")
    return tuple(payload["k"])


def _sign(key: str, body: bytes) -> bytes:
    return base64.urlsafe_b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()[:18])
