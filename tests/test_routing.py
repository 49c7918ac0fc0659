"""scimd's Router answers exactly as Werkzeug's matcher over the same URL_MAP would: the same
endpoint and arguments, the same 404, the same 405 with the same allowed methods."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from werkzeug.exceptions import HTTPException

from scimd.app import ROUTER, URL_MAP

PATHS = [
    "/", "/health", "/health/", "/health//", "/scim", "/scim/v2", "/scim/v2/",
    "/scim/v2/Users", "/scim/v2/Users/", "/scim/v2/Users//", "/scim/v2/users", "/scim/v2/USERS/x",
    "/scim/v2/Users/2819c223-7f76-453a-919d-413861904646", "/scim/v2/Users/abc/", "/scim/v2/Users/a/b",
    "/scim/v2/Users/.search", "/scim/v2/Users/.search/", "/scim/v2/Groups", "/scim/v2/Groups/g-1",
    "/scim/v2/Groups/.search", "/scim/v2/.search", "/scim/v2/.search/", "/scim/v2/Bulk", "/scim/v2/Bulk/x",
    "/scim/v2/ServiceProviderConfig", "/scim/v2/ServiceProviderConfigs/", "/scim/v2/ResourceTypes",
    "/scim/v2/ResourceTypes/User", "/scim/v2/ResourceTypes/User/x", "/scim/v2/Schemas",
    "/scim/v2/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", "/scim/v2/Me", "/looking-glass/",
    "/scim/v2/Users/é", "/scim/v2/Users/%2F",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def outcome(match: Callable[[], Any]) -> Any:
    try:
        return match()
    except HTTPException as exc:
        return exc.code, sorted(getattr(exc, "valid_methods", None) or ())


@pytest.mark.parametrize("path", PATHS)
def test_router_agrees_with_werkzeug(path: str) -> None:
    adapter = URL_MAP.bind("scimd.test")
    for method in METHODS:
        expected = outcome(lambda: adapter.match(path, method))
        assert outcome(lambda: ROUTER.match(path, method)) == expected, method


def test_every_rule_is_reachable() -> None:
    endpoints = {rule.endpoint for rule in URL_MAP.iter_rules()}
    reached = {outcome(lambda: ROUTER.match(path, method))[0] for path in PATHS for method in METHODS}
    assert endpoints <= reached
