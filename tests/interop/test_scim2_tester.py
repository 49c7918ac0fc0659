"""scim2-tester (pinned 0.5.2), every check it offers, against a live scimd daemon.

check_server() runs every checker but one with no tag filter: `core_schemas_validation` is
exported but not called by it, so it is run here as well. Each checker is one test case, per
resource type where it runs per resource type; a case passes when every result of that checker
is SUCCESS, COMPLIANT or ACCEPTABLE. Where scim2-tester is wrong about the RFC, the single
affected result is split out as a strict xfail that cites the RFC, with a test that pins what
scimd returns instead.

scim2-client needs an HTTP engine; its httpx2 engine is not among the test dependencies, so a
small standard-library engine sends the requests over real HTTP.
"""

from __future__ import annotations

import json as jsonlib
import urllib.error
import urllib.request
from typing import Any, Iterator
from urllib.parse import urlencode
from wsgiref.headers import Headers

import pytest
from scim2_client import BaseSyncSCIMClient
from scim2_client.engines.inprocess import InProcessResponse
from scim2_tester import CheckResult, Status, check_server
from scim2_tester.checkers import core_schemas_validation
from scim2_tester.utils import CheckConfig, CheckContext

from tests.conftest import TOKEN, Daemon


class UrllibSCIMClient(BaseSyncSCIMClient):
    """scim2-client over urllib: the arguments are httpx's (params, json, content, headers)."""

    def __init__(self, base_url: str, token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(self, method: str, url: str, *, params: dict[str, Any] | None = None, json: Any = None,
                content: bytes | None = None, headers: dict[str, str] | None = None) -> InProcessResponse:
        target = url if url.startswith(("http://", "https://")) else f"{self.base_url}/{url.lstrip('/')}"
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params, doseq=True)
        body = content if content is not None else (jsonlib.dumps(json).encode() if json is not None else None)
        request = urllib.request.Request(target, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", "application/scim+json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return InProcessResponse(response.status, Headers(list(response.headers.items())), response.read())
        except urllib.error.HTTPError as error:  # 4xx/5xx are answers for scim2-client to judge
            with error:
                return InProcessResponse(error.code, Headers(list(error.headers.items())), error.read())


DISCOVERY_CHECKS = (
    "service_provider_config_endpoint", "service_provider_config_endpoint_methods", "query_all_resource_types",
    "query_resource_type_by_id", "access_invalid_resource_type", "resource_types_endpoint_methods",
    "resource_types_schema_validation", "query_all_schemas", "access_schema_by_id", "access_invalid_schema",
    "schemas_endpoint_methods", "core_schemas_validation", "random_url",
)
RESOURCE_CHECKS = (
    "object_creation", "object_query", "object_query_without_id", "object_query_with_attributes",
    "object_list_with_attributes", "search_with_attributes", "object_replacement", "object_deletion",
    "check_add_attribute", "check_remove_attribute", "check_replace_attribute",
)
CASES = [(None, name) for name in DISCOVERY_CHECKS] + [
    (rtype, name) for rtype in ("User", "Group") for name in RESOURCE_CHECKS]
PASSING = (Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE)

MEMBERS_DISPLAY = (
    "scim2-tester compares the members it PATCHed with those it reads back including `display`. "
    "scimd publishes members.display as readOnly and fills it with the member's name, as the "
    "Group example of RFC 7643 §8.4 shows; a readOnly value is the service provider's to set "
    "(RFC 7643 §7), so the server adding it is no failed add or replace (RFC 7644 §3.5.2.1, §3.5.2.3).")
MANAGER_DISPLAY = (
    "scim2-tester compares the manager it PATCHed with the one it reads back including `displayName`. "
    "RFC 7643 §4.3 makes manager.displayName readOnly: scimd fills it with the manager's current name, "
    "which a client cannot set, so the server adding it is no failed add (RFC 7644 §3.5.2.1).")
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
# Results where scim2-tester is wrong, by (resource type, checker, attribute path or None for all).
TESTER_DEFECTS = {
    ("User", "check_add_attribute", ENTERPRISE_URN): MANAGER_DISPLAY,
    ("User", "check_add_attribute", f"{ENTERPRISE_URN}:manager"): MANAGER_DISPLAY,
    ("User", "check_replace_attribute", ENTERPRISE_URN): MANAGER_DISPLAY,
    ("User", "check_replace_attribute", f"{ENTERPRISE_URN}:manager"): MANAGER_DISPLAY,
    ("Group", "check_add_attribute", "members"): MEMBERS_DISPLAY,
    ("Group", "check_replace_attribute", "members"): MEMBERS_DISPLAY,
}
RESOURCE_SCHEMAS = {"urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:core:2.0:Group",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"}
SERVICE_PROVIDER_SCHEMAS = {"urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig",
                            "urn:ietf:params:scim:schemas:core:2.0:ResourceType",
                            "urn:ietf:params:scim:schemas:core:2.0:Schema"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[CheckResult]]:
    # A daemon of its own: the tester's clean-up is best effort, and the IdP scenarios count resources.
    daemon = Daemon(tmp_path_factory.mktemp("scim2-tester") / "data").start()
    try:
        client = UrllibSCIMClient(f"{daemon.base}/scim/v2", TOKEN)
        found = check_server(client)
        found += core_schemas_validation(CheckContext(client, CheckConfig()))
        yield found
    finally:
        daemon.stop()


def _urn(result: CheckResult) -> str | None:
    return result.data.get("urn") if isinstance(result.data, dict) else None


def _results_of(results: list[CheckResult], rtype: str | None, name: str) -> list[CheckResult]:
    return [r for r in results if r.title == name and r.resource_type == rtype]


def _describe(result: CheckResult) -> str:
    return f"{result.status.name} {result.resource_type or ''} {result.title} {_urn(result) or ''}: {result.reason}"


def test_the_case_list_is_every_checker_scim2_tester_has() -> None:
    import scim2_tester.checkers as checkers

    orchestrators = {"resource_type_tests"}  # runs the RESOURCE_CHECKS, is no check itself
    assert set(checkers.__all__) - orchestrators == set(DISCOVERY_CHECKS) | set(RESOURCE_CHECKS)


@pytest.mark.slow
def test_every_checker_ran(results: list[CheckResult]) -> None:
    ran = {(r.resource_type, r.title) for r in results}
    assert ran == set(CASES), f"not run: {set(CASES) - ran}; unexpected: {ran - set(CASES)}"


def _defect(rtype: str | None, name: str, result: CheckResult) -> bool:
    return (rtype, name, _urn(result)) in TESTER_DEFECTS or (rtype, name, None) in TESTER_DEFECTS


@pytest.mark.slow
@pytest.mark.parametrize(("rtype", "name"), [case for case in CASES if (*case, None) not in TESTER_DEFECTS],
                         ids=lambda value: value or "discovery")
def test_check_passes(results: list[CheckResult], rtype: str | None, name: str) -> None:
    mine = [r for r in _results_of(results, rtype, name) if not _defect(rtype, name, r)]
    assert mine, "the checker produced no result"
    failed = [r for r in mine if r.status not in PASSING]
    assert not failed, "\n".join(_describe(r) for r in failed)


@pytest.mark.slow
@pytest.mark.parametrize(("rtype", "name", "urn"), [
    pytest.param(*key, marks=pytest.mark.xfail(strict=True, reason=reason), id="-".join(filter(None, key)))
    for key, reason in TESTER_DEFECTS.items()])
def test_check_scim2_tester_gets_wrong(results: list[CheckResult], rtype: str | None, name: str,
                                       urn: str | None) -> None:
    affected = [r for r in _results_of(results, rtype, name) if urn is None or _urn(r) == urn]
    assert affected and all(r.status in PASSING for r in affected), "\n".join(map(_describe, affected))


@pytest.mark.slow
def test_schemas_lists_resource_and_service_provider_schemas(results: list[CheckResult]) -> None:
    """RFC 7643 §8.7.2: the ServiceProviderConfig, ResourceType and Schema schemas are published too."""
    [result] = _results_of(results, None, "core_schemas_validation")
    assert {schema.id for schema in result.data.resources} == RESOURCE_SCHEMAS | SERVICE_PROVIDER_SCHEMAS


@pytest.mark.slow
@pytest.mark.parametrize(("rtype", "name", "urn"), [key for key, reason in TESTER_DEFECTS.items()
                                                    if reason is MEMBERS_DISPLAY])
def test_scimd_returns_what_was_patched_plus_the_read_only_display(results: list[CheckResult], rtype: str, name: str,
                                                                   urn: str) -> None:
    [result] = [r for r in _results_of(results, rtype, name) if _urn(r) == urn]
    sent, returned = result.data["expected"], result.data["actual"]
    assert all(member.display for member in returned)  # scimd names every member
    assert [m.model_dump(exclude={"display"}) for m in returned] == [m.model_dump(exclude={"display"}) for m in sent]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["check_add_attribute", "check_replace_attribute"])
def test_scimd_returns_the_patched_manager_plus_its_read_only_display_name(results: list[CheckResult],
                                                                          name: str) -> None:
    [result] = [r for r in _results_of(results, "User", name) if _urn(r) == f"{ENTERPRISE_URN}:manager"]
    # The tester fails either on the PATCH response (modify_actual) or on the GET after it (actual).
    sent, returned = result.data["expected"], result.data.get("modify_actual") or result.data["actual"]
    assert returned.display_name  # the manager's current name, computed by scimd
    assert (returned.value, returned.ref) == (sent.value, sent.ref)
