"""The PATCH engine (RFC 7644 §3.5.2) against the case table in data/patch/: the RFC examples and
every PATCH entry of idp-dialects.md (ids in the case names), plus properties over random requests.

A case: `id`, `type` (User/Group), `before` (stored document), `operations` (or a raw `body`),
then `after` (and for groups `memberChanges` given the initial `members`) or `error` + `scimType`.
Member ids are written `<u1>`: the HTTP variant of this table swaps in real ids.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scimd import errors, trace
from scimd.filter import parse_path
from scimd.patch import MemberChanges, Operation, apply_patch, parse_patch_request
from scimd.resource import parse_resource
from scimd.schema import (ENTERPRISE_URN, GROUP_TYPE, PATCH_OP_URN, RESOURCE_TYPES, USER_TYPE, Attribute,
                          ResourceType, Schema)
from scimd.store import MemberRef

DATA = Path(__file__).parent / "data" / "patch"
CASES: list[dict[str, Any]] = [case for file in sorted(DATA.glob("*.json")) for case in json.loads(file.read_text())]
assert len(CASES) > 100, "patch test data not found"


class FakeMembers:
    """The Members protocol over a plain list, counting how often the whole list is loaded."""

    def __init__(self, ids: Sequence[str] = ()) -> None:
        self.ids = list(ids)
        self.loads = 0

    def contains(self, ids: Sequence[str]) -> set[str]:
        return {member_id for member_id in ids if member_id in self.ids}

    def all(self) -> list[MemberRef]:
        self.loads += 1
        return [MemberRef(member_id, "User", f"user {member_id}") for member_id in self.ids]


def body_of(case: dict[str, Any]) -> Any:
    if "operations" in case:
        return {"schemas": [PATCH_OP_URN], "Operations": case["operations"]}
    body = case["body"]
    return body["__raw__"] if isinstance(body, dict) and "__raw__" in body else body


def run(case: dict[str, Any], members: FakeMembers) -> Any:
    rtype = RESOURCE_TYPES[case["type"].lower()]
    return apply_patch(rtype, case["before"], parse_patch_request(body_of(case)), members)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case: dict[str, Any]) -> None:
    before = copy.deepcopy(case["before"])
    members = FakeMembers(case.get("members", []))
    if "error" in case:
        with pytest.raises(getattr(errors, case["error"])) as caught:
            run(case, members)
        assert caught.value.scim_type == case["scimType"]
        assert caught.value.status == 400
    else:
        result = run(case, members)
        assert result.doc == case["after"]
        assert result.password == case.get("password")
        assert asdict(result.members) == case.get("memberChanges", asdict(MemberChanges()))
        # The whole member list is loaded only for a filter other than `value eq "id"` (or their `or`).
        assert members.loads == (1 if case.get("loadsAll") else 0)
    assert case["before"] == before, "the input document was mutated"


def test_every_idp_entry_has_a_case() -> None:
    wanted = ("E9 E10 E11 E12 E13 E14 E15 E16 E17 E18 E22 E23 E24 E25 E27 E35 O15 O16 O17 O21 O22 O23 S6 S7 OL1 OL2 "
              "OL3 J2 J3 X1 X2 X3 X5 X11 X12 X23").split()
    named = {case["id"].split()[0] for case in CASES}
    assert not [entry for entry in wanted if entry not in named]


# -- decisions for the Looking Glass --------------------------------------------------------------


def patch(rtype: ResourceType, doc: dict[str, Any], operations: list[dict[str, Any]],
          members: FakeMembers | None = None) -> tuple[Any, list[dict[str, Any]]]:
    with trace.recording() as decisions:
        result = apply_patch(rtype, doc, parse_patch_request({"schemas": [PATCH_OP_URN], "Operations": operations}),
                             members or FakeMembers())
    return result, decisions


def test_one_decision_per_operation_with_before_and_after() -> None:
    _, decisions = patch(USER_TYPE, {"userName": "a", "active": True}, [
        {"op": "Replace", "path": "active", "value": False},
        {"op": "add", "value": {"nickName": "N", "title": "T"}}])
    notes = [d for d in decisions if d["kind"] == "patch"]
    assert notes == [
        {"kind": "patch", "op": "replace", "path": "active", "before": True, "after": False},
        {"kind": "patch", "op": "add", "path": "(no path)", "before": None, "after": "N", "attribute": "nickName"},
        {"kind": "patch", "op": "add", "path": "(no path)", "before": None, "after": "T", "attribute": "title"},
    ]


def test_password_never_reaches_the_trace() -> None:
    result, decisions = patch(USER_TYPE, {"userName": "a"}, [{"op": "replace", "path": "password", "value": "s3cret"}])
    assert result.password == "s3cret"
    assert "s3cret" not in repr(decisions)


def test_leniencies_are_noted() -> None:
    _, decisions = patch(GROUP_TYPE, {"displayName": "g"}, [
        {"op": "replace", "value": {"id": "x", "displayName": "h", "junk": 1}},
        {"op": "remove", "path": "members", "value": [{"value": "u1"}]}], FakeMembers(["u1"]))
    texts = [d.get("text", "") for d in decisions if d["kind"] == "leniency"]
    assert "ignored readOnly id in value" in texts
    assert any("junk" in text for text in texts)
    assert any("legacy member removal" in text for text in texts)
    _, decisions = patch(USER_TYPE, {"userName": "a"}, [
        {"op": "add", "path": 'emails[type eq "work"].value', "value": "a@x"}])
    assert any("upsert" in d.get("text", "") for d in decisions)


def test_member_decisions_never_list_the_group() -> None:
    members = FakeMembers([f"u{i}" for i in range(1000)])
    result, decisions = patch(GROUP_TYPE, {"displayName": "g"}, [
        {"op": "add", "path": "members", "value": [{"value": "new"}]}], members)
    assert result.members == MemberChanges(add=["new"])
    assert [d["after"] for d in decisions if d["kind"] == "patch"] == [{"add": ["new"], "remove": []}]
    assert members.loads == 0


# -- rules no table case can reach ----------------------------------------------------------------


def test_immutable_attribute_set_once_never_changed() -> None:
    ext = Schema("urn:test:params:scim:schemas:extension:badge:2.0:User", "Badge", "",
                 (Attribute("badge", mutability="immutable"),))
    rtype = ResourceType("User", "/Users", "test", USER_TYPE.core, (ext,))
    ops = lambda value: [Operation("replace", None, None, {f"{ext.id}:badge": value})]  # noqa: E731
    with_badge = {"userName": "a", ext.id: {"badge": "b1"}}
    assert apply_patch(rtype, {"userName": "a"}, ops("b1"), FakeMembers()).doc == with_badge
    assert apply_patch(rtype, with_badge, ops("b1"), FakeMembers()).doc == with_badge
    with pytest.raises(errors.Mutability):
        apply_patch(rtype, with_badge, ops("b2"), FakeMembers())
    with pytest.raises(errors.Mutability):
        apply_patch(rtype, with_badge, [Operation("remove", parse_path(ext.id), ext.id, None)], FakeMembers())


def test_plain_member_removals_never_load_the_group() -> None:
    members = FakeMembers(["a", "b", "c"])
    result, _ = patch(GROUP_TYPE, {"displayName": "g"}, [
        {"op": "remove", "path": 'members[value eq "a"]'},
        {"op": "remove", "path": 'members[value eq "b" or value eq "zz"]'},
        {"op": "Remove", "path": "members", "value": [{"value": "c"}]}], members)
    assert result.members == MemberChanges(remove=["a", "b", "c"])
    assert members.loads == 0


def test_filter_error_keeps_the_parser_position() -> None:
    with pytest.raises(errors.InvalidFilter) as caught:
        parse_patch_request({"Operations": [{"op": "remove", "path": 'emails[type zz "work"]'}]})
    assert "position 12" in caught.value.detail


# -- properties over random requests --------------------------------------------------------------

USER_DOC = {"userName": "bjensen", "name": {"givenName": "Barbara", "familyName": "Jensen"}, "active": True,
            "emails": [{"value": "b@example.com", "type": "work", "primary": True},
                       {"value": "h@x.org", "type": "home"}],
            "roles": [{"value": "admin", "primary": True}],
            ENTERPRISE_URN: {"employeeNumber": "7", "manager": {"value": "m1"}}}
GROUP_DOC = {"displayName": "Guides", "externalId": "g-1"}


def _paths(rtype: ResourceType) -> list[str]:
    """Paths from the schema, qualified and not, with filters; the strategy mixes in junk."""
    paths = ["id", "meta.version", "schemas", "nope", "name..x", ENTERPRISE_URN, "members"]
    for schema in rtype.schemas:
        prefix = "" if schema is rtype.core else f"{schema.id}:"
        for attr in schema.attributes:
            paths.append(prefix + attr.name)
            for sub in attr.sub_attributes:
                paths += [f"{prefix}{attr.name}.{sub.name}", f'{prefix}{attr.name}[{sub.name} eq "work"]',
                          f'{prefix}{attr.name}[type eq "work"].{sub.name}', f"{prefix}{attr.name}[{sub.name} pr]"]
    return paths


def _requests(rtype: ResourceType, doc_keys: list[str]) -> st.SearchStrategy[Any]:
    """Mostly well-formed PatchOp bodies (so most reach apply_patch), with junk at every level."""
    scalars = (st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=5)
               | st.sampled_from(["", "True", "false", "work", "x@y", "m1", "m2"]))
    names = [*doc_keys, "value", "type", "primary", "givenName", "display", "$ref"]
    keys = st.sampled_from(names) | st.text(max_size=4)
    element = st.fixed_dictionaries({}, optional={"value": st.sampled_from(["m1", "x@y", "b@example.com"]),
                                                  "type": st.sampled_from(["work", "home"]), "primary": st.booleans()})
    values = st.recursive(scalars | element, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(keys, inner, max_size=3), max_leaves=8)
    paths = st.sampled_from(_paths(rtype))
    ops = st.sampled_from(["add", "Replace", "remove", "add", "replace", "Remove", "move"])
    operation = (st.fixed_dictionaries({"op": ops, "path": paths, "value": values})
                 | st.fixed_dictionaries({"op": ops, "value": st.dictionaries(keys | paths, values, max_size=4)})
                 | st.fixed_dictionaries({"op": ops}, optional={"path": st.none() | paths | st.text(max_size=12),
                                                                "value": values}))
    well_formed = st.fixed_dictionaries({"schemas": st.just([PATCH_OP_URN]),
                                         "Operations": st.lists(operation, max_size=4)})
    junk = st.fixed_dictionaries({"Operations": st.lists(operation | values, max_size=3)},
                                 optional={"schemas": st.sampled_from([[PATCH_OP_URN], ["urn:x"], "x"])}) | values
    return well_formed | well_formed | junk


@pytest.mark.parametrize(("rtype", "doc"), [(USER_TYPE, USER_DOC), (GROUP_TYPE, GROUP_DOC)], ids=["User", "Group"])
def test_random_requests_fail_only_with_scim_4xx(rtype: ResourceType, doc: dict[str, Any]) -> None:
    keys = [a.name for s in rtype.schemas for a in s.attributes] + ["name.givenName", f"{ENTERPRISE_URN}:manager"]

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_requests(rtype, keys), st.lists(st.sampled_from(["m1", "m2", "m3"]), unique=True))
    def check(body: Any, member_ids: list[str]) -> None:
        original = copy.deepcopy(doc)
        try:
            result = apply_patch(rtype, doc, parse_patch_request(body), FakeMembers(member_ids))
        except errors.ScimError as error:
            assert 400 <= error.status < 500
            return
        finally:
            assert doc == original, "the input document was mutated"
        # What PATCH produces is a valid resource, already in the form POST would store.
        assert parse_resource(rtype, copy.deepcopy(result.doc)).doc == result.doc
        changes = result.members
        assert changes.replace is None or not (changes.add or changes.remove)
        assert not set(changes.add) & set(changes.remove)

    check()
