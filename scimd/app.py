"""The SCIM WSGI application: one URL map, default-deny bearer auth, one handler per
(endpoint, method), and every error rendered as a SCIM Error body (RFC 7644 §3.12)."""

from __future__ import annotations

import functools
import hmac
import logging
import time
from typing import Any, Callable, Iterable

from werkzeug import exceptions as http_errors
from werkzeug.datastructures import ETags
from werkzeug.routing import Map, Rule, Submount

from scimd import __version__, discovery, errors, search, trace
from scimd.bulk import run_bulk
from scimd.config import Config, read_token_file
from scimd.directory import Directory, Outcome, Precondition
from scimd.lookingglass_http import LookingGlass
from scimd.ratelimit import RateLimiter, retry_after
from scimd.resource import Projection, parse_projection
from scimd.schema import GROUP_TYPE, PUBLISHED_SCHEMAS, RESOURCE_TYPES, USER_TYPE, ResourceType
from scimd.store import Store, StorageError
from scimd.wsgi import (
    AfterResponse, Cors, Reply, Router, ScimRequest, empty_response, error_response, from_http_exception, internal_error,
    json_response, log_access, request_id,
)

log = logging.getLogger("scimd")

# Discovery holds no identity data (RFC 7644 §4): readable without a token, like /health.
# Every other endpoint needs the token: an endpoint added later is protected unless listed here.
PUBLIC_ENDPOINTS = frozenset({"health", "service_provider_config", "resource_types", "resource_type", "schemas",
                              "schema"})

_TYPES_BY_SEGMENT = {"Users": USER_TYPE, "Groups": GROUP_TYPE}

# Handed each exchange once its answer is out, when the Looking Glass captures:
# (request, reply, request id, epoch time it began, seconds it took, protocol decisions noted).
Observer = Callable[[ScimRequest, Reply, str, float, float, trace.Decisions], None]


def _resource_rules(segment: str) -> list[Rule]:
    kind = segment.lower()
    return [
        Rule(f"/{segment}", endpoint=f"{kind}_list", methods=["GET"], defaults={"segment": segment}),
        Rule(f"/{segment}", endpoint=f"{kind}_create", methods=["POST"], defaults={"segment": segment}),
        Rule(f"/{segment}/.search", endpoint=f"{kind}_search", methods=["POST"], defaults={"segment": segment}),
        Rule(f"/{segment}/<rid>", endpoint=f"{kind}_get", methods=["GET"], defaults={"segment": segment}),
        Rule(f"/{segment}/<rid>", endpoint=f"{kind}_replace", methods=["PUT"], defaults={"segment": segment}),
        Rule(f"/{segment}/<rid>", endpoint=f"{kind}_patch", methods=["PATCH"], defaults={"segment": segment}),
        Rule(f"/{segment}/<rid>", endpoint=f"{kind}_delete", methods=["DELETE"], defaults={"segment": segment}),
    ]


URL_MAP = Map([
    Rule("/health", endpoint="health", methods=["GET"]),
    Submount("/scim/v2", [
        Rule("/ServiceProviderConfig", endpoint="service_provider_config", methods=["GET"]),
        # SailPoint's documentation uses the SCIM 1.1 plural (idp-dialects S1).
        Rule("/ServiceProviderConfigs", endpoint="service_provider_config", methods=["GET"]),
        Rule("/ResourceTypes", endpoint="resource_types", methods=["GET"]),
        Rule("/ResourceTypes/<name>", endpoint="resource_type", methods=["GET"]),
        Rule("/Schemas", endpoint="schemas", methods=["GET"]),
        Rule("/Schemas/<urn>", endpoint="schema", methods=["GET"]),
        *_resource_rules("Users"),
        *_resource_rules("Groups"),
        Rule("/.search", endpoint="root_search", methods=["POST"]),
        Rule("/Bulk", endpoint="bulk", methods=["POST"]),
    ]),
], strict_slashes=False, merge_slashes=False)
ROUTER = Router(URL_MAP)


class ScimApp:
    """The WSGI application. `authorize` is exposed for the Looking Glass, which shares the token."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.directory = Directory(store, config.base_url)
        self.cors = Cors(config.cors_origins)
        self.limiter = RateLimiter(config.rate_limit) if config.rate_limit else None
        self._tokens = tuple(t.encode() for t in (*config.api_tokens, *config.file_tokens))
        # Werkzeug's own cap is the larger of the two limits; scim_json() applies the one that fits the endpoint.
        self.request_class = type("Request", (ScimRequest,), {
            "max_content_length": max(config.max_body_bytes, config.bulk_max_payload)})
        self.observer: Observer | None = None  # the Looking Glass's capture, set by with_looking_glass

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = self.request_class(environ)
        started = time.perf_counter()
        rid = request_id(environ)
        observer = self.observer
        if observer is None:
            reply, decisions = self.respond(request, rid), None
        else:
            began = time.time()
            reply, decisions = self._respond_recording(request, rid)
        reply.headers += [("X-Request-Id", rid), ("X-Content-Type-Options", "nosniff")]
        self.cors.decorate(request, reply)
        elapsed = time.perf_counter() - started
        # The access line and the Looking Glass's capture wait until the answer is out
        # (AfterResponse): waitress calls close() once it has sent the body, so the client has its
        # answer first (waitress reads that connection's next request only after close(), though).
        if observer is None:
            after = functools.partial(log_access, request, reply.status, rid, elapsed)
        else:
            after = functools.partial(_observed, observer, request, reply, rid, began, elapsed, decisions)
        return AfterResponse(reply(environ, start_response), after)

    def _respond_recording(self, request: ScimRequest, rid: str) -> tuple[Reply, trace.Decisions]:
        """respond(), with the protocol decisions it notes collected for the Looking Glass. The
        recorder is set directly, not through trace.recording(): see trace.recorder."""
        decisions: trace.Decisions = []
        recorder = trace.recorder
        previous, recorder.decisions = recorder.decisions, decisions
        try:
            return self.respond(request, rid), decisions
        finally:
            recorder.decisions = previous

    def respond(self, request: ScimRequest, rid: str) -> Reply:
        try:
            if self.cors.is_preflight(request):
                return self.cors.preflight(request)
            endpoint, values = ROUTER.match(request.path, request.method)
            self._guard(request, endpoint)
            return getattr(self, f"on_{endpoint}")(request, **values)
        except errors.ScimError as exc:
            return error_response(exc)
        except http_errors.HTTPException as exc:
            return error_response(from_http_exception(exc))
        except Exception:  # noqa: BLE001 - the one place that turns a bug into a clean 500
            log.exception("unhandled error in request %s", rid)
            return error_response(internal_error(rid))

    def _guard(self, request: ScimRequest, endpoint: str) -> None:
        """Rate limit, then auth; public endpoints are named, everything else is protected."""
        if self.limiter is not None:
            wait = self.limiter.admit(request.remote_addr or "-")
            if wait:
                raise errors.TooManyRequests(headers={"Retry-After": retry_after(wait)})
        if endpoint not in PUBLIC_ENDPOINTS and not self.authorize(request.environ):
            raise errors.Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="scimd"'})

    # -- auth ------------------------------------------------------------------------------

    def authorize(self, environ: dict[str, Any]) -> bool:
        """Bearer token check (RFC 6750 §2.1), scheme case-insensitive, constant-time compare."""
        if not self.config.auth_enabled:
            return True
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        offered = token.strip().encode()
        # Compare against every token so the time taken does not reveal which one matched.
        return sum(hmac.compare_digest(offered, known) for known in self._tokens) > 0

    def reload_tokens(self) -> None:
        """SIGHUP: re-read SCIM_API_TOKEN_FILE so a rotated token takes effect without a restart."""
        file_tokens = read_token_file(self.config.token_file) if self.config.token_file else ()
        tokens = (*self.config.api_tokens, *file_tokens)
        self._tokens = tuple(t.encode() for t in tokens)  # one assignment: readers see old or new, never half
        log.info("reloaded %d API token(s)", len(tokens))

    # -- health and discovery --------------------------------------------------------------

    def on_health(self, request: ScimRequest) -> Reply:
        try:
            self.store.ping()
        except StorageError as exc:
            log.error("health check failed: %s", exc)
            return json_response({"status": "unavailable", "version": __version__, "storage": "failed"}, 503,
                                 content_type="application/json")
        return json_response({"status": "ok", "version": __version__, "storage": "ok"},
                             content_type="application/json")

    def on_service_provider_config(self, request: ScimRequest) -> Reply:
        return json_response(discovery.service_provider_config(self.config))

    def on_resource_types(self, request: ScimRequest) -> Reply:
        return json_response(discovery.list_response(discovery.resource_types(self.config.base_url)))

    def on_resource_type(self, request: ScimRequest, name: str) -> Reply:
        rtype = RESOURCE_TYPES.get(name.lower())
        if rtype is None:
            raise errors.NotFound(f"No resource type {name!r}.")
        return json_response(rtype.to_json(self.config.base_url))

    def on_schemas(self, request: ScimRequest) -> Reply:
        return json_response(discovery.list_response(discovery.schemas(self.config.base_url)))

    def on_schema(self, request: ScimRequest, urn: str) -> Reply:
        schema = PUBLISHED_SCHEMAS.get(urn.lower())
        if schema is None:
            raise errors.NotFound(f"No schema {urn!r}.")
        return json_response(schema.to_json(self.config.base_url))

    # -- resources -------------------------------------------------------------------------

    def _list(self, request: ScimRequest, segment: str) -> Reply:
        rtype = _TYPES_BY_SEGMENT[segment]
        query = search.from_query(request.args)
        return json_response(self.directory.search([rtype], query, self.config.max_results))

    def _search(self, request: ScimRequest, segment: str | None = None) -> Reply:
        rtypes = [_TYPES_BY_SEGMENT[segment]] if segment else [USER_TYPE, GROUP_TYPE]
        query = search.from_body(request.scim_json(self.config.max_body_bytes))
        return json_response(self.directory.search(rtypes, query, self.config.max_results))

    def _get(self, request: ScimRequest, segment: str, rid: str) -> Reply:
        rtype = _TYPES_BY_SEGMENT[segment]
        resource, etag = self.directory.get(rtype, rid, _projection(request, rtype))
        if "HTTP_IF_NONE_MATCH" in request.environ and _matches(request.if_none_match, etag):
            raise errors.NotModified(headers={"ETag": etag})
        return json_response(resource, headers={"ETag": etag})

    def _create(self, request: ScimRequest, segment: str) -> Reply:
        rtype = _TYPES_BY_SEGMENT[segment]
        body = request.scim_json(self.config.max_body_bytes)
        outcome = self.directory.create(rtype, body, _projection(request, rtype))
        return _written(outcome, 201, {"Location": outcome.location})

    def _replace(self, request: ScimRequest, segment: str, rid: str) -> Reply:
        rtype = _TYPES_BY_SEGMENT[segment]
        body = request.scim_json(self.config.max_body_bytes)
        outcome = self.directory.replace(rtype, rid, body, _precondition(request), _projection(request, rtype))
        return _written(outcome, 200)

    def _patch(self, request: ScimRequest, segment: str, rid: str) -> Reply:
        rtype = _TYPES_BY_SEGMENT[segment]
        body = request.scim_json(self.config.max_body_bytes)
        # Groups answer 204 unless the client asks for attributes: Entra recommends it and a full
        # member list of a 100,000-member group per PATCH would make membership changes O(n)
        # (RFC 7644 §3.5.2 allows either; idp-dialects E22).
        wants_body = rtype is USER_TYPE or "attributes" in request.args or "excludedAttributes" in request.args
        projection = _projection(request, rtype) if wants_body else None
        outcome = self.directory.patch(rtype, rid, body, _precondition(request), projection)
        return _written(outcome, 200)

    def _delete(self, request: ScimRequest, segment: str, rid: str) -> Reply:
        self.directory.delete(_TYPES_BY_SEGMENT[segment], rid, _precondition(request))
        return empty_response(204)

    on_users_list = on_groups_list = _list
    on_users_search = on_groups_search = _search
    on_users_get = on_groups_get = _get
    on_users_create = on_groups_create = _create
    on_users_replace = on_groups_replace = _replace
    on_users_patch = on_groups_patch = _patch
    on_users_delete = on_groups_delete = _delete

    def on_root_search(self, request: ScimRequest) -> Reply:
        return self._search(request)

    def on_bulk(self, request: ScimRequest) -> Reply:
        body = request.scim_json(limit=self.config.bulk_max_payload)
        return json_response(run_bulk(self.directory, self.config, body))


def _projection(request: ScimRequest, rtype: ResourceType) -> Projection:
    if not request.environ.get("QUERY_STRING"):  # most requests: no need to parse the query
        return parse_projection(rtype, (), ())
    return parse_projection(rtype, _csv(request.args.get("attributes")), _csv(request.args.get("excludedAttributes")))


def _csv(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part.strip()]


def _precondition(request: ScimRequest) -> Precondition | None:
    """If-Match with weak comparison, as SCIM versions are weak ETags (RFC 7644 §3.14)."""
    if "If-Match" not in request.headers:
        return None
    tags: ETags = request.if_match
    return Precondition(frozenset(tags.as_set(include_weak=True)), tags.star_tag)


def _matches(tags: ETags, etag: str) -> bool:
    bare = etag.removeprefix("W/").strip('"')
    return tags.star_tag or bare in tags.as_set(include_weak=True)


def _written(outcome: Outcome, status: int, headers: dict[str, str] | None = None) -> Reply:
    headers = {"ETag": outcome.etag, **(headers or {})}
    if outcome.resource is None:
        return empty_response(204, headers)
    return json_response(outcome.resource, status, headers=headers)


def _observed(observer: Observer, request: ScimRequest, reply: Reply, rid: str, began: float, elapsed: float,
              decisions: trace.Decisions) -> None:
    log_access(request, reply.status, rid, elapsed)
    observer(request, reply, rid, began, elapsed, decisions)


def create_app(config: Config, store: Store) -> LookingGlass:
    """The WSGI application to serve."""
    return with_looking_glass(ScimApp(config, store), config)


def with_looking_glass(scim: ScimApp, config: Config, **options: Any) -> LookingGlass:
    """`scim` inside the Looking Glass, which serves /looking-glass and, when SCIM_LOOKING_GLASS
    is on, is handed every exchange to record. `options`: LookingGlass's stream settings."""
    glass = LookingGlass(scim, config, scim.authorize, **options)
    if glass.ring is not None:
        scim.observer = glass.record
    return glass
