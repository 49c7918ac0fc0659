"""HTTP plumbing shared by the SCIM routes: request and response classes, JSON bodies, turning
every error into a SCIM Error body, CORS, request ids and the access log.

Only this module and scimd/app.py (and the Looking Glass's HTTP side) know about Werkzeug.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Any, Callable, Iterable, Iterator

import orjson
from werkzeug import exceptions as http_errors
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map
from werkzeug.wrappers import Request

from scimd import errors

SCIM_JSON = "application/scim+json; charset=utf-8"
_JSON_TYPES = ("application/scim+json", "application/json")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_SECRET_PARAMS = re.compile(r"(?i)(^|&)((?:access_)?token|ticket|password|api_key)=[^&]*")

access_log = logging.getLogger("scimd.access")
log = logging.getLogger("scimd")


class ScimRequest(Request):
    """A request whose JSON is read with orjson; the body size cap is set per app."""

    max_content_length = 1_048_576

    def scim_json(self, limit: int) -> Any:
        """The body as JSON, for application/scim+json or application/json (RFC 7644 §3.1).

        A body over `limit` bytes is refused from its Content-Length, before it is read.
        """
        if self.content_length is not None and self.content_length > limit:
            raise errors.PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        mimetype = self.mimetype
        if mimetype not in _JSON_TYPES:
            raise errors.UnsupportedMediaType(
                f"Content-Type {mimetype or '(none)'!r} is not supported: send application/scim+json.")
        data = self.get_data(cache=True)
        if len(data) > limit:  # a chunked body has no Content-Length to check up front
            raise errors.PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        if not data.strip():
            raise errors.InvalidSyntax("The request body is empty.")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise errors.InvalidSyntax(f"The request body is not valid JSON: {exc.msg}.") from None


# Request ids: a random per-process prefix and a counter, unique without a system call per
# request (uuid4 reads the OS random source, and every system call is a GIL hand-off).
_ID_PREFIX = secrets.token_hex(6)
_id_counter = itertools.count(1)


def request_id(environ: dict[str, Any]) -> str:
    """The client's X-Request-Id when it is a safe token, else a fresh one."""
    incoming = environ.get("HTTP_X_REQUEST_ID", "")
    return incoming if incoming and _REQUEST_ID.fullmatch(incoming) else f"{_ID_PREFIX}{next(_id_counter):010x}"


_STATUS_LINES = {code: f"{code} {reason}" for code, reason in HTTP_STATUS_CODES.items()}
_NO_BODY = frozenset({204, 304})


class Reply:
    """A response as WSGI wants it: status, header list and one body. Werkzeug's Response does
    much more (and costs a third of a small request); the SCIM endpoints need only this."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:  # a loop, not next() over a generator: a third of the cost
            if key.lower() == lowered:
                return value
        return None

    def set(self, name: str, value: str) -> None:
        lowered = name.lower()
        self.headers = [(key, v) for key, v in self.headers if key.lower() != lowered]
        self.headers.append((name, value))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.status in _NO_BODY:  # RFC 9110 §15.3.5, §15.4.5: no content, so no length either
            start_response(_STATUS_LINES[self.status], self.headers)
            return []
        start_response(_STATUS_LINES[self.status], [*self.headers, ("Content-Length", str(len(self.body)))])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]


def _header_list(headers: dict[str, str] | None) -> list[tuple[str, str]]:
    return list(headers.items()) if headers else []


def json_response(body: Any, status: int = 200, content_type: str = SCIM_JSON,
                  headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(body), [("Content-Type", content_type), *_header_list(headers)])


def empty_response(status: int, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, b"", _header_list(headers))


def error_response(error: errors.ScimError) -> Reply:
    if error.status == 304:
        return empty_response(304, error.headers)
    return json_response(error.to_json(), error.status, headers=error.headers)


class Router:
    """A URL map's rules (literal paths, or paths ending in one `<argument>`) matched by two dict
    lookups instead of Werkzeug's regex matcher (a tenth of a small request), with the same
    answers: one trailing slash tolerated (strict_slashes=False), HEAD wherever GET is, 404 for an
    unknown path and 405 naming the allowed methods."""

    _ARGUMENT = re.compile(r"^(.*/)<(?:\w+:)?(\w+)>$")

    def __init__(self, url_map: Map) -> None:
        self._literal: dict[str, list[tuple[frozenset[str], str, dict[str, str]]]] = {}
        self._prefixed: dict[str, list[tuple[frozenset[str], str, dict[str, str]]]] = {}
        self._argument: dict[str, str] = {}
        for rule in url_map.iter_rules():
            route = (frozenset(rule.methods or ()), str(rule.endpoint), dict(rule.defaults or {}))
            found = self._ARGUMENT.match(rule.rule)
            if found is None:
                self._literal.setdefault(rule.rule, []).append(route)
            else:
                self._prefixed.setdefault(found[1], []).append(route)
                self._argument[found[1]] = found[2]

    def match(self, path: str, method: str) -> tuple[str, dict[str, str]]:
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        allowed: set[str] = set()
        for routes, values in self._candidates(path):
            for methods, endpoint, defaults in routes:
                if method in methods:
                    return endpoint, {**defaults, **values}
                allowed |= methods
        if allowed:
            raise http_errors.MethodNotAllowed(valid_methods=sorted(allowed))
        raise http_errors.NotFound()

    def _candidates(self, path: str) -> Iterable[tuple[list[tuple[frozenset[str], str, dict[str, str]]], dict[str, str]]]:
        """The literal rule first, then the rule whose argument takes the last path segment."""
        if path in self._literal:
            yield self._literal[path], {}
        prefix, _, last = path.rpartition("/")
        prefix += "/"
        if last and prefix in self._prefixed:
            yield self._prefixed[prefix], {self._argument[prefix]: last}


def from_http_exception(exc: http_errors.HTTPException) -> errors.ScimError:
    """Routing and body-size errors from Werkzeug, as SCIM errors (RFC 7644 §3.12)."""
    if isinstance(exc, http_errors.NotFound):
        return errors.NotFound("No such endpoint.")
    if isinstance(exc, http_errors.MethodNotAllowed):
        allowed = ", ".join(sorted(exc.valid_methods or ()))
        return errors.MethodNotAllowed(f"Method not allowed here; allowed: {allowed}.", headers={"Allow": allowed})
    if isinstance(exc, http_errors.RequestEntityTooLarge):
        return errors.PayloadTooLarge("The request body is larger than this server accepts.")
    if isinstance(exc, http_errors.RequestHeaderFieldsTooLarge):
        return errors.ScimError("Request header fields too large.")
    error = errors.ScimError(exc.description or "Bad request.")
    error.status = exc.code or 400
    return error


def internal_error(rid: str) -> errors.ScimError:
    """A 500 that reveals nothing but the request id to look up in the log."""
    return errors.InternalError(f"Internal server error; see the server log for request {rid}.")


class Cors:
    """CORS for the configured origins only (Fetch standard; exposed and allowed headers per the issue)."""

    ALLOW_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id"
    EXPOSE_HEADERS = "ETag, Location, X-Request-Id, WWW-Authenticate"
    ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origins)

    def allowed(self, request: Request) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin in self.origins else None

    def is_preflight(self, request: Request) -> bool:
        return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers

    def preflight(self, request: Request) -> Reply:
        origin = self.allowed(request)
        if not origin:
            return empty_response(204)
        return empty_response(204, {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": self.ALLOW_METHODS,
            "Access-Control-Allow-Headers": self.ALLOW_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        })

    def decorate(self, request: Request, reply: Reply) -> None:
        if not self.origins:
            return
        origin = self.allowed(request)
        if origin:
            reply.set("Access-Control-Allow-Origin", origin)
            reply.set("Access-Control-Expose-Headers", self.EXPOSE_HEADERS)
            reply.headers.append(("Vary", "Origin"))


class AfterResponse:
    """A response body whose close() runs `then`: work that can wait until the client has its
    answer. A WSGI server calls close() once it is done with the response (PEP 3333), and
    waitress has sent a small body from the worker thread by then, so the client never waits for
    `then`. (waitress reads the connection's next request only after close(), so under load
    `then` still costs that connection its time.)"""

    __slots__ = ("_chunks", "_then")

    def __init__(self, chunks: Iterable[bytes], then: Callable[[], None]) -> None:
        self._chunks = chunks
        self._then: Callable[[], None] | None = then

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        then, self._then = self._then, None  # once, however often a server calls it
        if then is not None:
            then()


def log_access(request: Request, status: int, rid: str, elapsed: float) -> None:
    """One JSON line per request; never the Authorization header, never bodies. `elapsed` is the
    seconds the app took to answer."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    environ = request.environ
    query = environ.get("QUERY_STRING", "")
    if query:
        query = _SECRET_PARAMS.sub(r"\1\2=[redacted]", query)
    access_log.info(orjson.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "request_id": rid,
        "method": request.method,
        "path": request.path + (f"?{query}" if query else ""),
        "status": status,
        "duration_ms": round(elapsed * 1000, 2),
        "client": environ.get("REMOTE_ADDR"),
        "user_agent": environ.get("HTTP_USER_AGENT", ""),
    }).decode())
