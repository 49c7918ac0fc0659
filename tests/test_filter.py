"""The filter and PATCH path parser (RFC 7644 §3.4.2.2, §3.5.2): trees, errors, limits, round trips."""

from __future__ import annotations

import json
import string
import time
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scimd.filter import (COMPARE_OPS, MAX_DEPTH, MAX_LENGTH, MAX_TERMS, And, AttrPath, Compare, FilterError, Node,
                          Not, Or, PatchPath, Present, ValuePath, parse_filter, parse_path, to_text)

DATA = Path(__file__).parent / "data" / "filters"
VALID = json.loads((DATA / "valid.json").read_text())
INVALID = json.loads((DATA / "invalid.json").read_text())
PATHS = json.loads((DATA / "paths.json").read_text())
INVALID_PATHS = json.loads((DATA / "invalid_paths.json").read_text())
assert VALID and INVALID and PATHS and INVALID_PATHS, "filter test data not found"

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.mark.parametrize(("text", "expected"), VALID.items(), ids=list(VALID))
def test_valid_filter_tree(text: str, expected: str) -> None:
    assert to_text(parse_filter(text)) == expected


@pytest.mark.parametrize("case", INVALID, ids=[case["filter"] for case in INVALID])
def test_invalid_filter(case: dict[str, object]) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filter(case["filter"])  # type: ignore[arg-type]
    assert case["message"] in caught.value.message
    assert caught.value.position == case["position"]
    assert str(caught.value) == f"{caught.value.message} at position {case['position']}"


def path(attr: str, sub: str | None = None, urn: str | None = None) -> AttrPath:
    return AttrPath(urn, attr, sub)


# Exact trees where the text form cannot tell (URN splits, value types, positions).
TREES: list[tuple[str, Node]] = [
    ('a eq 1 or b eq 2 and c eq 3',
     Or((Compare(path("a"), "eq", 1), And((Compare(path("b"), "eq", 2), Compare(path("c"), "eq", 3)))))),
    (f"{ENTERPRISE}:manager.value pr", Present(path("manager", "value", ENTERPRISE))),
    (f"{CORE}:name.givenName eq \"x\"", Compare(path("name", "givenName", CORE), "eq", "x")),
    (f"{ENTERPRISE}:department eq \"x\"", Compare(path("department", urn=ENTERPRISE), "eq", "x")),
    ('x eq 1e3', Compare(path("x"), "eq", 1000.0)),
    ('x eq 1.5e3', Compare(path("x"), "eq", 1500.0)),
    ('x eq -1', Compare(path("x"), "eq", -1)),
    ('x eq TRUE', Compare(path("x"), "eq", True)),
    ('x eq "true"', Compare(path("x"), "eq", "true")),
    ('x eq NULL', Compare(path("x"), "eq", None)),
    ('userName eq "O\\"Malley"', Compare(path("userName"), "eq", 'O"Malley')),
    ('emails[type eq "work"].value eq "x"',
     ValuePath(path("emails"), And((Compare(path("type"), "eq", "work"), Compare(path("value"), "eq", "x"))))),
    ('emails[type eq "a" or type eq "b"].value pr',
     ValuePath(path("emails"), And((Or((Compare(path("type"), "eq", "a"), Compare(path("type"), "eq", "b"))),
                                    Present(path("value")))))),
    ('not (a pr and b pr)', Not(And((Present(path("a")), Present(path("b")))))),
]


@pytest.mark.parametrize(("text", "tree"), TREES, ids=[text for text, _ in TREES])
def test_exact_tree(text: str, tree: Node) -> None:
    assert parse_filter(text) == tree


def test_positions_point_at_each_path() -> None:
    node = parse_filter('userName eq "a" or emails[type eq "work"].value pr')
    assert isinstance(node, Or)
    compare, value_path = node.children
    assert isinstance(compare, Compare) and isinstance(value_path, ValuePath)
    assert isinstance(value_path.filter, And)
    inner = [child.path.position for child in value_path.filter.children]  # type: ignore[union-attr]
    assert (compare.path.position, value_path.path.position, inner) == (0, 19, [26, 42])


@pytest.mark.parametrize(("text", "expected"), PATHS.items(), ids=list(PATHS))
def test_patch_path(text: str, expected: dict[str, str | None]) -> None:
    parsed = parse_path(text)
    assert (parsed.attr.urn, parsed.attr.attr, parsed.attr.sub) == (expected["urn"], expected["attr"], expected["attr_sub"])
    assert (to_text(parsed.filter) if parsed.filter else None) == expected["filter"]
    assert parsed.sub == expected["sub"]
    assert to_text(parsed) == expected["text"]


@pytest.mark.parametrize("case", INVALID_PATHS, ids=[case["path"] for case in INVALID_PATHS])
def test_invalid_patch_path(case: dict[str, object]) -> None:
    with pytest.raises(FilterError) as caught:
        parse_path(case["path"])  # type: ignore[arg-type]
    assert case["message"] in caught.value.message
    assert caught.value.position == case["position"]


def test_nesting_limit_is_exact() -> None:
    parse_filter("(" * MAX_DEPTH + "a pr" + ")" * MAX_DEPTH)
    parse_filter("not (" * MAX_DEPTH + "a pr" + ")" * MAX_DEPTH)
    with pytest.raises(FilterError, match="nested deeper than 32 levels") as caught:
        parse_filter("(" * (MAX_DEPTH + 1) + "a pr" + ")" * (MAX_DEPTH + 1))
    assert caught.value.position == MAX_DEPTH
    parse_filter("(" * (MAX_DEPTH - 1) + "emails[type pr]" + ")" * (MAX_DEPTH - 1))
    with pytest.raises(FilterError, match="nested deeper") as caught:
        parse_filter("(" * MAX_DEPTH + "emails[type pr]" + ")" * MAX_DEPTH)
    assert caught.value.position == MAX_DEPTH + len("emails")


def test_term_limit_is_exact() -> None:
    parse_filter(" or ".join(["a pr"] * MAX_TERMS))
    with pytest.raises(FilterError, match="more than 500 attribute expressions") as caught:
        parse_filter(" or ".join(["a pr"] * (MAX_TERMS + 1)))
    assert caught.value.position == MAX_TERMS * len("a pr or ")


def test_length_limit_is_exact() -> None:
    padding = MAX_LENGTH - len('a eq ""')
    parse_filter(f'a eq "{"x" * padding}"')
    with pytest.raises(FilterError, match="longer than 10000 characters"):
        parse_filter(f'a eq "{"x" * (padding + 1)}"')


HOSTILE = {
    "parens 20000 deep": "(" * 20_000 + "a pr" + ")" * 20_000,
    "not 20000 deep": "not (" * 20_000 + "a pr" + ")" * 20_000,
    "parens 5000 deep, short enough to be parsed": "(" * 4_000 + "a pr" + ")" * 4_000,
    "not 1600 deep, short enough to be parsed": "not (" * 1_600 + "a pr" + ")" * 1_600,
    "valuePaths 2000 deep": "a[" * 2_000 + "b pr" + "]" * 2_000,
    "100 KB filter": 'userName eq "' + "x" * 100_000 + '"',
    "1200 terms": " or ".join(["a pr"] * 1_200),
    "unterminated 9 KB string": 'a eq "' + "\\\"" * 4_500,
    "9000 spaces": " " * 9_000,  # once quadratic: the tokenizer rescanned trailing spaces at each offset
    "9000 spaces then garbage": "a pr" + " " * 9_000 + ")",
    "9000 quotes": '"' * 9_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_input_fails_fast(text: str) -> None:
    timings = []
    for _ in range(3):  # the best of three, so that a busy machine does not fail the test
        started = time.perf_counter()
        with pytest.raises(FilterError):
            parse_filter(text)
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.05


def test_filter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^expected a value, got end of filter at position 11$"):
        parse_filter("userName eq")


# Property tests.

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,8}", fullmatch=True).filter(
    lambda name: name.lower() not in ("and", "or", "not")) | st.just("$ref")
URNS = st.sampled_from([None, CORE, ENTERPRISE, "urn:example:custom:1.0:Thing", "URN:X:Y"])
VALUES = (st.text(max_size=12) | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.none()
          | st.floats(allow_nan=False, allow_infinity=False))


@st.composite
def absolute_paths(draw: st.DrawFn) -> AttrPath:
    return AttrPath(draw(URNS), draw(NAMES), draw(st.none() | NAMES))


def relative_paths() -> st.SearchStrategy[AttrPath]:
    return st.builds(AttrPath, st.none(), NAMES, st.none())


def terms(paths: st.SearchStrategy[AttrPath]) -> st.SearchStrategy[Node]:
    return st.builds(Present, paths) | st.builds(Compare, paths, st.sampled_from(COMPARE_OPS), VALUES)


def trees(leaves: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        many = st.lists(children, min_size=2, max_size=4)
        return (many.map(lambda nodes: _flat(And, nodes)) | many.map(lambda nodes: _flat(Or, nodes))
                | st.builds(Not, children))
    return st.recursive(leaves, extend, max_leaves=12)


def _flat(kind: type[And] | type[Or], nodes: list[Node]) -> Node:
    """The parser flattens nested And/Or of the same kind: generate only trees it can produce."""
    flat: list[Node] = []
    for node in nodes:
        flat.extend(node.children if isinstance(node, kind) else (node,))
    return kind(tuple(flat))


VALUE_PATHS = st.builds(ValuePath, st.builds(AttrPath, URNS, NAMES, st.none()), trees(terms(relative_paths())))
FILTERS = trees(terms(absolute_paths()) | VALUE_PATHS)


def depth(node: Node) -> int:
    """Nesting depth of the text to_text writes: each and/or operand and not/valuePath adds a level."""
    match node:
        case And(children) | Or(children):
            return 1 + max(map(depth, children))
        case Not(child) | ValuePath(_, child):
            return 1 + depth(child)
        case _:
            return 0


@settings(max_examples=300)
@given(FILTERS)
def test_to_text_round_trips(tree: Node) -> None:
    assume(depth(tree) <= MAX_DEPTH)
    text = to_text(tree)
    assert parse_filter(text) == tree
    assert to_text(parse_filter(text)) == text


@given(st.builds(PatchPath, absolute_paths(), st.none(), st.none())
       | st.builds(PatchPath, st.builds(AttrPath, URNS, NAMES, st.none()), trees(terms(relative_paths())),
                   st.none() | NAMES))
def test_patch_path_round_trips(patch_path: PatchPath) -> None:
    assume(patch_path.filter is None or depth(patch_path.filter) < MAX_DEPTH)
    assert parse_path(to_text(patch_path)) == patch_path


FRAGMENTS = st.sampled_from([
    "(", ")", "[", "]", ".", " ", "not", "and", "or", "eq", "pr", "gt", '"x"', '"', "\\", '"\\u00e4"', "emails",
    "value", "urn:a:b:2.0:c", ".value", "1", "-1.5e3", "01", "true", "null", "jyoung", "$ref", "\t",
])
ARBITRARY = st.text() | st.lists(FRAGMENTS, max_size=40).map("".join) | st.lists(FRAGMENTS, max_size=40).map(" ".join)


def _parses_or_fails_cleanly(parse: object, text: str) -> None:
    started = time.perf_counter()
    try:
        result = parse(text)  # type: ignore[operator]
    except FilterError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert to_text(result)
    assert time.perf_counter() - started < 1


@settings(max_examples=500)
@given(ARBITRARY)
def test_arbitrary_text_parses_or_raises_filter_error(text: str) -> None:
    _parses_or_fails_cleanly(parse_filter, text)
    _parses_or_fails_cleanly(parse_path, text)


@given(st.text(alphabet=string.printable, min_size=1, max_size=30))
def test_any_json_string_value_is_decoded(value: str) -> None:
    assert parse_filter(f"a eq {json.dumps(value)}") == Compare(AttrPath(None, "a", None), "eq", value)
