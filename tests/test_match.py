"""Filter semantics over the schema and the reference evaluator (RFC 7644 §3.4.2.2).

The tables under tests/data/filters/ (resources.json, match.json) are the contract the SQL
compiler must also meet: the same filter over the same resources selects the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scimd.filter import COMPARE_OPS, AttrPath, Compare, FilterError, Node, Not, Present, parse_filter, parse_path
from scimd.match import (check_comparison, element_matches, implicit_value, matches, predicate, resolve,
                         resolve_relative, validate)
from scimd.schema import COMMON, ENTERPRISE, ENTERPRISE_URN, GROUP, GROUP_TYPE, USER, USER_TYPE, Attribute, ResourceType

DATA = Path(__file__).parent / "data" / "filters"
RESOURCES: dict[str, list[dict[str, Any]]] = json.loads((DATA / "resources.json").read_text())
MATCH = json.loads((DATA / "match.json").read_text())
INVALID = json.loads((DATA / "invalid_semantic.json").read_text())
assert RESOURCES and MATCH and INVALID, "filter test data not found"
TYPES = {"User": USER_TYPE, "Group": GROUP_TYPE}


@pytest.mark.parametrize("case", MATCH, ids=[f"{case['type']}: {case['filter']}" for case in MATCH])
def test_filter_selects(case: dict[str, Any]) -> None:
    node, rtype = parse_filter(case["filter"]), TYPES[case["type"]]
    assert [r["id"] for r in RESOURCES[case["type"]] if matches(node, r, rtype)] == case["ids"]


@pytest.mark.parametrize("case", INVALID, ids=[f"{case['type']}: {case['filter']}" for case in INVALID])
def test_invalid_filter_is_rejected_before_evaluation(case: dict[str, Any]) -> None:
    rtype = TYPES[case["type"]]
    for check in (lambda: validate(parse_filter(case["filter"]), rtype),
                  lambda: matches(parse_filter(case["filter"]), {}, rtype)):
        with pytest.raises(FilterError) as caught:
            check()
        assert case["message"] in caught.value.message
        assert caught.value.position == case["position"]


RESOLVE = [
    ("userName", USER_TYPE, USER, "userName", None),
    ("USERNAME", USER_TYPE, USER, "userName", None),
    ("name.GIVENNAME", USER_TYPE, USER, "name", "givenName"),
    ("id", USER_TYPE, COMMON, "id", None),
    ("meta.lastModified", GROUP_TYPE, COMMON, "meta", "lastModified"),
    ("urn:ietf:params:scim:schemas:core:2.0:User:externalId", USER_TYPE, USER, "externalId", None),
    ("urn:ietf:params:scim:schemas:core:2.0:Group:members.$REF", GROUP_TYPE, GROUP, "members", "$ref"),
    (f"{ENTERPRISE_URN.upper()}:manager.value", USER_TYPE, ENTERPRISE, "manager", "value"),
]


@pytest.mark.parametrize(("text", "rtype", "schema", "attr", "sub"), RESOLVE, ids=[row[0] for row in RESOLVE])
def test_resolve(text: str, rtype: ResourceType, schema: object, attr: str, sub: str | None) -> None:
    found = resolve(rtype, parse_path(text).attr)
    assert (found.schema, found.attr.name, found.sub.name if found.sub else None) == (schema, attr, sub)


def test_resolve_rejects_a_bare_extension_urn() -> None:
    with pytest.raises(FilterError, match=f"unknown attribute '{ENTERPRISE_URN}'"):
        resolve(USER_TYPE, parse_path(ENTERPRISE_URN).attr)


def test_resolve_relative() -> None:
    emails = USER.attribute("emails")
    assert emails is not None
    assert resolve_relative(emails, AttrPath(None, "TYPE", None)).name == "type"
    for wrong in (AttrPath(None, "nosuch", None, 3), AttrPath(None, "type", "x", 3),
                  AttrPath("urn:ietf:params:scim:schemas:core:2.0:User", "type", None, 3)):
        with pytest.raises(FilterError) as caught:
            resolve_relative(emails, wrong)
        assert caught.value.position == 3


def attribute(text: str) -> Attribute:
    found = resolve(USER_TYPE, parse_path(text).attr)
    return found.sub or found.attr


CHECKS = [
    ("active", "eq", True, True),
    ("active", "ne", "True", True),
    ("active", "eq", "FALSE", False),
    ("emails.primary", "eq", "true", True),
    ("meta.created", "gt", "2011-05-13T04:42:34Z", "2011-05-13T04:42:34.000000Z"),
    ("meta.created", "le", "2011-05-13T06:42:34.123456789+02:00", "2011-05-13T04:42:34.123456Z"),
    ("meta.created", "eq", "2011-05-13T04:42:34", "2011-05-13T04:42:34.000000Z"),
    ("externalId", "eq", 123, "123"),
    ("externalId", "eq", 1.5, "1.5"),
    ("externalId", "eq", True, "true"),
    ("userName", "co", "Ärger", "Ärger"),
    ("userName", "eq", None, None),
    ("emails", "co", "x", "x"),
    ("emails", "co", 1, "1"),
    ("groups", "eq", "g1", "g1"),
    ("x509Certificates.value", "sw", "MII", "MII"),
    ("profileUrl", "gt", "https://a", "https://a"),
]


@pytest.mark.parametrize(("path", "op", "value", "expected"), CHECKS,
                         ids=[f"{path} {op} {value!r}" for path, op, value, _ in CHECKS])
def test_check_comparison_normalises(path: str, op: str, value: object, expected: object) -> None:
    result = check_comparison(attribute(path), op, value, 0)
    assert result == expected and type(result) is type(expected)


def test_check_comparison_numbers() -> None:
    number = Attribute("n", "integer")
    assert check_comparison(number, "gt", 1.5, 0) == 1.5
    assert check_comparison(number, "eq", -2, 0) == -2
    for wrong in (True, "1"):
        with pytest.raises(FilterError, match="expected a number for integer attribute 'n'"):
            check_comparison(number, "eq", wrong, 7)
    with pytest.raises(FilterError, match="operator 'co' is not supported on decimal attribute 'd'"):
        check_comparison(Attribute("d", "decimal"), "co", 1, 0)


@pytest.mark.parametrize(("path", "expected"), [("emails", "value"), ("members", "value"), ("name", None),
                                                ("addresses", None), ("userName", None)])
def test_implicit_value(path: str, expected: str | None) -> None:
    rtype = GROUP_TYPE if path == "members" else USER_TYPE
    found = resolve(rtype, AttrPath(None, path, None)).attr
    assert (implicit_value(found).name if implicit_value(found) else None) == expected  # type: ignore[union-attr]


EMAILS = USER.attribute("emails")
ELEMENTS = [
    ('type eq "work"', {"type": "Work", "value": "a@x.com"}, True),
    ('type eq "work"', {"type": "home", "value": "a@x.com"}, False),
    ('type eq "work" and value co "@X.COM"', {"type": "work", "value": "a@x.com"}, True),
    ('primary eq "True"', {"primary": True}, True),
    ('primary eq true', {"primary": "true"}, False),  # a stored value of the wrong type never matches
    ('display pr', {"display": ""}, False),
    ('not (primary eq true)', {}, True),
    ('value eq null', {"value": None}, True),
]


@pytest.mark.parametrize(("text", "element", "expected"), ELEMENTS, ids=[f"{t} on {e}" for t, e, _ in ELEMENTS])
def test_element_matches(text: str, element: dict[str, Any], expected: bool) -> None:
    assert EMAILS is not None
    assert element_matches(parse_path(f"emails[{text}]").filter, element, EMAILS) is expected  # type: ignore[arg-type]


def test_element_matches_validates() -> None:
    assert EMAILS is not None
    for text in ('nosuch eq "x"', "primary gt true", 'type[value pr]'):
        with pytest.raises(FilterError):
            element_matches(parse_filter(text), {}, EMAILS)


def test_extension_data_is_read_under_its_urn_only() -> None:
    node = parse_filter(f'{ENTERPRISE_URN}:department eq "x"')
    assert matches(node, {ENTERPRISE_URN: {"department": "x"}}, USER_TYPE)
    assert not matches(node, {"department": "x"}, USER_TYPE)
    assert not matches(node, {ENTERPRISE_URN: "x"}, USER_TYPE)


def test_not_a_node() -> None:
    with pytest.raises(TypeError):
        validate("userName pr", USER_TYPE)  # type: ignore[arg-type]


# Property tests over the real schema: every parseable comparison either validates or raises
# FilterError, evaluation returns a bool for every resource, and `not` is the exact complement.

def _leaf_paths(rtype: ResourceType) -> list[str]:
    paths = []
    for schema in (COMMON, *rtype.schemas):
        prefix = "" if schema in (COMMON, rtype.core) else f"{schema.id}:"
        for attr in schema.attributes:
            paths.append(prefix + attr.name)
            paths.extend(f"{prefix}{attr.name}.{sub.name}" for sub in attr.sub_attributes)
    return paths


USER_PATHS = st.sampled_from(_leaf_paths(USER_TYPE))
VALUES = (st.sampled_from(["2011-05-13T04:42:34Z", "true", "True", "bjensen", "EXAMPLE.COM", "", "u3", "notadate"])
          | st.text(max_size=5) | st.integers(-3, 3) | st.booleans() | st.none() | st.floats(allow_nan=False))


@st.composite
def user_terms(draw: st.DrawFn) -> Node:
    path = parse_path(draw(USER_PATHS)).attr
    op = draw(st.sampled_from((*COMPARE_OPS, "pr")))
    return Present(path) if op == "pr" else Compare(path, op, draw(VALUES))


@settings(max_examples=400)
@given(st.lists(user_terms(), min_size=1, max_size=3))
def test_evaluation_is_total_and_not_is_the_complement(nodes: list[Node]) -> None:
    for node in nodes:
        try:
            test = predicate(node, USER_TYPE)
        except FilterError:
            continue
        negated = predicate(Not(node), USER_TYPE)
        for resource in RESOURCES["User"]:
            assert test(resource) in (True, False)
            assert negated(resource) is not test(resource)
