"""The interoperability suite (issue 9): each identity provider's request sequence, kept as data in
tests/interop/<client>.json, replayed over HTTP against one real scimd daemon.

The runner and its assertion language are in runner.py; the sequences come from
shared/docs/idp-dialects.md, each step named after the entry it replays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.interop.runner import StepFailure, Server, check, load, run

SCENARIOS = sorted(Path(__file__).parent.glob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SCENARIOS, ids=[path.stem for path in SCENARIOS])
def test_client_sequence(interop_server: Server, path: Path) -> None:
    outcome = run(interop_server, load(path))
    assert outcome.requests > 0
    if outcome.gaps:
        # Every other step passed; these are what the client sends and scimd does not do yet.
        pytest.xfail("known gaps:\n" + "\n".join(outcome.gaps))


def test_every_client_has_a_scenario() -> None:
    assert {path.stem for path in SCENARIOS} == {"entra", "okta", "sailpoint", "onelogin_jumpcloud_google_ping"}


# The runner must be able to fail: a green suite means nothing if its assertions always hold.
BODY: dict[str, Any] = {
    "totalResults": 0, "Resources": [], "active": False, "title": None,
    "emails": [{"type": "work", "value": "x"}, {"type": "home", "value": "y"}],
    "members": [{"value": "a"}, {"value": "b"}],
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": {"value": "271"}},
}
HOLDS = [
    "totalResults == 0", "Resources == []", "active == false", "active != 0", "has title", "title absent",
    'emails[?type=="work"].value == "x"', "members length == 2", "not has groups", 'members[1].value == "b"',
    '["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"].manager.value == "271"',
    'emails contains {"type": "home", "value": "y"}', "totalResults is number", "members length >= 1",
    'emails[?type=="other"] absent', "active exists",
]
FAILS = [
    "totalResults == 1", "Resources == [1]", "active == 0", "active == true", "not has title", "title exists",
    'emails[?type=="work"].value == "y"', "members length == 3", "has groups", 'members[2].value exists',
    '["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"].manager.value == 271',
    'emails contains {"type": "home"}', "totalResults is string", "active is number", "Resources length > 0",
    'emails[?type=="other"] exists',
]


@pytest.mark.parametrize("assertion", HOLDS)
def test_assertion_holds(assertion: str) -> None:
    assert check(assertion, BODY) is None


@pytest.mark.parametrize("assertion", FAILS)
def test_assertion_fails_and_says_what_it_found(assertion: str) -> None:
    assert check(assertion, BODY)


def test_an_ambiguous_selection_fails() -> None:
    with pytest.raises(StepFailure, match="2 elements match"):
        check('members[?value=="a"] exists', {"members": [{"value": "a"}, {"value": "a"}]})


@pytest.mark.slow
def test_a_failing_step_names_client_step_and_difference(interop_server: Server) -> None:
    scenario = {"client": "Example IdP", "steps": [
        {"name": "X1 lookup", "method": "GET", "path": "/Users?filter=userName eq \"nobody\"", "status": 200,
         "expect": ["totalResults == 7"]}]}
    with pytest.raises(StepFailure) as failure:
        run(interop_server, scenario)
    message = str(failure.value)
    assert "[Example IdP] step 1 'X1 lookup'" in message
    assert "expected: totalResults == 7" in message and "actual: 0" in message
    assert '"totalResults":0' in message  # the response body, to see what came back


@pytest.mark.slow
def test_a_scenario_that_leaves_data_behind_fails_and_is_cleaned_up(interop_server: Server) -> None:
    users = interop_server.count("Users")
    scenario = {"client": "Leaky IdP", "random": ["rnd"], "steps": [
        {"name": "create", "method": "POST", "path": "/Users", "body": {"userName": "leak-{rnd}"}, "status": 201}]}
    with pytest.raises(StepFailure, match="left the directory changed"):
        run(interop_server, scenario)
    assert interop_server.count("Users") == users


@pytest.mark.slow
def test_a_known_gap_is_reported_and_the_run_goes_on(interop_server: Server) -> None:
    lookup = {"method": "GET", "path": "/Users?count=0", "status": 200}
    scenario = {"client": "Gappy IdP", "steps": [
        {**lookup, "name": "not yet", "expect": ["totalResults == -1"], "knownGap": "scimd cannot count below zero"},
        {**lookup, "name": "afterwards"}]}
    outcome = run(interop_server, scenario)
    assert outcome.requests == 1
    [gap] = outcome.gaps
    assert "step 1 'not yet'" in gap and "known gap: scimd cannot count below zero" in gap


@pytest.mark.slow
def test_a_known_gap_that_passes_fails_the_run(interop_server: Server) -> None:
    scenario = {"client": "Fixed IdP", "steps": [{"name": "works now", "method": "GET", "path": "/Users?count=0",
                                                   "status": 200, "knownGap": "was broken"}]}
    with pytest.raises(StepFailure, match="passes now: remove its knownGap marker"):
        run(interop_server, scenario)
