"""The Looking Glass over HTTP: a WSGI middleware that serves /looking-glass (viewer, JSON API,
Server-Sent Events) and records the /scim/v2 exchanges the SCIM app hands it.

Wiring (app.with_looking_glass): `LookingGlass(scim_app, config, authorize)` wraps the SCIM
WSGI app, and the SCIM app calls `record` (its observer) after each answer; `authorize(environ)`
is the SCIM app's own bearer-token check, so the viewer is exactly as protected as the API. With
`config.looking_glass` false it records nothing and answers 404 under /looking-glass, at the
cost of two string comparisons per request.
"""

from __future__ import annotations

import logging
import threading
import time
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import orjson
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from scimd import lookingglass as lg
from scimd import trace
from scimd.config import Config
from scimd.wsgi import Reply

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    Authorize = Callable[[WSGIEnvironment], bool]

PREFIX = "/looking-glass"
SCIM_PREFIX = "/scim/v2"
_PREFIX_DIR = PREFIX + "/"  # concatenated once, not on every request
_SCIM_DIR = SCIM_PREFIX + "/"
_NO_LENGTH = frozenset(("", "0"))  # CONTENT_LENGTH values that announce no body
MAX_STREAMS = 4  # waitress gives each open stream a worker thread; the rest must stay for SCIM
KEEPALIVE = 15.0  # seconds between comments, so proxies and waitress's channel_timeout keep the stream
STREAM_LIFETIME = 60.0  # then the stream ends and the client reconnects, handing the thread back
RETRY_AFTER = "5"
VIEWER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSETS = {
    "looking-glass.html": "text/html; charset=utf-8",
    "looking-glass.js": "text/javascript; charset=utf-8",
    "looking-glass.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": VIEWER_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_log = logging.getLogger("scimd.lookingglass")


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    response = Response(body, status, mimetype="application/json", headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"status": status, "detail": detail}, headers)


def _unauthorized() -> Response:
    return _error(401, "A valid bearer token is required.", {"WWW-Authenticate": 'Bearer realm="scimd"'})


def _int_param(name: str, raw: str | None, default: int, low: int, high: int | None = None) -> int:
    """A request parameter as an int within [low, high]; the ValueError is the 400 message."""
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < low or (high is not None and int(raw) > high):
        bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{name} must be an integer {bound}.")
    return int(raw)


class _SseStream:
    """One Server-Sent Events response: events after `after`, keep-alive comments, then the end.

    An iterable with close() rather than a generator, because the server calls close() even when
    it never iterated (the client went away first), and that is when the stream slot comes back.
    """

    def __init__(self, ring: lg.EventRing, after: int, release: Callable[[], None],
                 keepalive: float, lifetime: float) -> None:
        self._ring = ring
        self._after = after
        self._release: Callable[[], None] | None = release
        self._keepalive = keepalive
        self._lifetime = lifetime

    def __iter__(self) -> Iterator[bytes]:
        seq = self._after
        deadline = time.monotonic() + self._lifetime
        yield b"retry: 2000\n\n"
        while not self._ring.closed and (left := deadline - time.monotonic()) > 0:
            batch = self._ring.wait_since(seq, min(self._keepalive, left))
            if batch:
                seq = batch[-1].seq
                yield b"".join(b"id: %d\ndata: %s\n\n" % (event.seq, event.to_json()) for event in batch)
            else:
                yield b": keep-alive\n\n"

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class LookingGlass:
    """WSGI middleware serving /looking-glass over a ring of the /scim/v2 exchanges it records."""

    def __init__(self, app: WSGIApplication, config: Config, authorize: Authorize, *,
                 max_streams: int = MAX_STREAMS, keepalive: float = KEEPALIVE,
                 stream_lifetime: float = STREAM_LIFETIME) -> None:
        self.app = app
        self.ring = lg.EventRing(config.looking_glass_max_events) if config.looking_glass else None
        self._authorize = authorize
        # Tokens from SCIM_API_TOKEN and SCIM_API_TOKEN_FILE, as loaded at start.
        self._secrets = lg.Secrets.of((*config.api_tokens, *config.file_tokens))
        self._max_body = config.max_body_bytes
        self._tickets = lg.TicketSigner()
        self._streams = threading.BoundedSemaphore(max_streams)
        self._keepalive = keepalive
        self._lifetime = stream_lifetime
        static = resources.files("scimd").joinpath("static")
        self._assets = {name: static.joinpath(name).read_bytes() for name in ASSETS} if self.ring is not None else {}
        # path -> (allowed methods, handler). The stream takes no HEAD: it would hold a slot for nothing.
        read = ("GET", "HEAD")
        self._routes: dict[str, tuple[tuple[str, ...], Callable[[Request], WSGIApplication]]] = {
            PREFIX: (read, self._redirect),
            f"{PREFIX}/": (read, lambda request: self._asset("looking-glass.html")),
            f"{PREFIX}/looking-glass.js": (read, lambda request: self._asset("looking-glass.js")),
            f"{PREFIX}/looking-glass.css": (read, lambda request: self._asset("looking-glass.css")),
            f"{PREFIX}/api/events": (read, self._events),
            f"{PREFIX}/api/stream": (("GET",), self._stream),
            f"{PREFIX}/api/ticket": (("POST",), self._ticket),
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if path.startswith(_PREFIX_DIR) or path == PREFIX:
            return self._serve(environ, start_response)
        return self.app(environ, start_response)

    def shutdown(self) -> None:
        """End open streams now (call before stopping the server) instead of at their lifetime."""
        if self.ring is not None:
            self.ring.close()

    # -- capture ------------------------------------------------------------------------------

    def record(self, request: Request, reply: Reply, rid: str, started: float, elapsed: float,
               decisions: trace.Decisions) -> None:
        """The SCIM app's observer (app.Observer): keep one /scim/v2 exchange, redacted.

        The app calls it once the answer is out, and hands over what it already has (the reply
        object, the request id, its timing), so a capture costs no WSGI wrapper of its own.
        `started` is the epoch time the exchange began and `elapsed` its duration in seconds.
        """
        environ = request.environ
        path: str = environ.get("PATH_INFO", "")
        if self.ring is None or not (path.startswith(_SCIM_DIR) or path == SCIM_PREFIX):
            return
        try:
            sent = b"" if environ.get("REQUEST_METHOD") == "HEAD" else reply.body
            self.ring.append(lg.Event.capture(environ, reply.status, reply.get("Content-Type") or "", rid, started,
                                              elapsed, self._request_body(request), sent, decisions, self._secrets))
        except Exception:  # a diagnostic aid must never fail the provisioning request it watches
            _log.exception("Looking Glass could not record %s %s", environ.get("REQUEST_METHOD"), path)

    def _request_body(self, request: Request) -> bytes:
        """What the client sent: the bytes the app read (werkzeug keeps them), or, for a request
        answered without reading its body (a 401, a 415), read now that the answer is out.
        Not one the app refused on its Content-Length alone: reading it would only cost memory."""
        environ = request.environ
        # Without either header, or with a length of 0 (some clients send one on every GET), a
        # request has no body (RFC 9112 §6.3): it costs no look at werkzeug's headers or stream.
        if environ.get("CONTENT_LENGTH", "0") in _NO_LENGTH and "HTTP_TRANSFER_ENCODING" not in environ:
            return b""
        length = request.content_length  # None when chunked: then werkzeug reads a terminated stream only
        if length is not None and not 0 < length <= self._max_body:
            return b""
        try:
            return request.get_data(cache=True)
        except HTTPException:  # a chunked body over the app's limit, or cut short by the client
            return b""

    # -- serving ------------------------------------------------------------------------------

    def _serve(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        route = self._routes.get(request.path) if self.ring is not None else None
        if route is None:
            response: WSGIApplication = _error(404, "Not found.")
        elif request.method not in route[0]:
            response = _error(405, "Method not allowed.", {"Allow": ", ".join(route[0])})
        else:
            response = route[1](request)
        return response(environ, start_response)

    def _redirect(self, request: Request) -> Response:
        return Response(status=308, headers={"Location": f"{request.script_root}{PREFIX}/"})

    def _asset(self, name: str) -> Response:
        return Response(self._assets[name], content_type=ASSETS[name], headers=_SECURITY_HEADERS)

    def _events(self, request: Request) -> Response:
        assert self.ring is not None
        if not self._authorize(request.environ):
            return _unauthorized()
        try:
            since = _int_param("since", request.args.get("since"), 0, 0)
            limit = _int_param("limit", request.args.get("limit"), lg.DEFAULT_LIMIT, 1, lg.MAX_LIMIT)
        except ValueError as exc:
            return _error(400, str(exc))
        last = self.ring.last_seq
        events = b",".join(event.to_json() for event in self.ring.since(since, limit))
        return _json(200, b'{"events":[%s],"lastSeq":%d,"capacity":%d}' % (events, last, self.ring.capacity))

    def _ticket(self, request: Request) -> Response:
        if not self._authorize(request.environ):
            return _unauthorized()
        ticket, expires = self._tickets.issue()
        return _json(200, {"ticket": ticket, "expires": expires})

    def _stream(self, request: Request) -> WSGIApplication:
        assert self.ring is not None
        ticket = request.args.get("ticket")
        if not (self._tickets.verify(ticket) if ticket is not None else self._authorize(request.environ)):
            return _unauthorized()
        try:
            # EventSource sends Last-Event-ID when it reconnects; a fresh viewer passes `since`.
            resume = request.headers.get("Last-Event-ID")
            after = (_int_param("Last-Event-ID", resume, 0, 0) if resume
                     else _int_param("since", request.args.get("since"), self.ring.last_seq, 0))
        except ValueError as exc:
            return _error(400, str(exc))
        if not self._streams.acquire(blocking=False):
            return _error(503, "Too many open Looking Glass streams; retry shortly.", {"Retry-After": RETRY_AFTER})
        stream = _SseStream(self.ring, after, self._streams.release, self._keepalive, self._lifetime)

        def respond(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [
                ("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-store"),
                ("X-Accel-Buffering", "no"),  # a buffering reverse proxy would hold events back
            ])
            return stream

        return respond
