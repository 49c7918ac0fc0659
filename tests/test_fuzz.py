"""Property-based fuzzing of the two parsers hostile clients reach most easily.

(a) Filters: arbitrary text and grammar-shaped text (schema attribute names in any case, every
operator, values of every JSON kind and size, parentheses, brackets, junk) through
`parse_filter`, `compile_filter` for Users and Groups, and the SQL run on a real database:
a result or a FilterError, never another exception, each example well under a second.

(b) PATCH through HTTP (in-process): random operation lists built from the schemas' attribute
names, ops in any case, any values and paths, on a User and on a Group with members: 2xx or a
SCIM 4xx, never a 500, each under a second, and a failed PATCH leaves the resource exactly as
it was, meta.version included.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scimd.filter import COMPARE_OPS, FilterError, parse_filter
from scimd.schema import ENTERPRISE_URN, GROUP_TYPE, GROUP_URN, USER_TYPE, USER_URN, ResourceType
from scimd.sql import compile_filter, find
from scimd.store import Store
from tests.conftest import ERROR_URN, PATCH_URN, ScimClient, make_app

TYPES = (USER_TYPE, GROUP_TYPE)


def attribute_paths() -> list[str]:
    """Every attribute and sub-attribute of every schema, bare and URN-qualified, plus near misses."""
    paths = ["id", "externalId", "meta", "meta.version", "meta.lastModified", "meta.created", "meta.resourceType",
             "schemas", "nope", "name.nope", "emails.nope", "members.value", "groups.value", "$ref", "value", "type"]
    for rtype in TYPES:
        for schema in rtype.schemas:
            for attr in schema.attributes:
                paths += [attr.name, f"{schema.id}:{attr.name}"]
                for sub in attr.sub_attributes:
                    paths += [f"{attr.name}.{sub.name}", f"{schema.id}:{attr.name}.{sub.name}"]
    return sorted(set(paths))


PATHS = attribute_paths()


@st.composite
def any_case(draw: st.DrawFn, words: st.SearchStrategy[str]) -> str:
    """SCIM names and operators are case-insensitive: write them in any case."""
    word = draw(words)
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(word, flips))


JSON_STRINGS = st.sampled_from(['"bjensen"', '""', '"O\\"Malley"', '"\\u00e4\\u0000"', '"2011-05-13T04:42:34Z"',
                                '"\\ud800"', '"%_\\\\"', '"work"', '"true"']) | st.text(max_size=8).map(
    lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
NUMBERS = st.sampled_from(["0", "-1", "1.5", "1e400", "-1e-400", "100000000000000000000000000000", "9223372036854775808",
                           "01", "1.", ".5", "-0", "1E+2"]) | st.integers().map(str)
LITERALS = st.sampled_from(["true", "false", "null", "True", "NULL"])
VALUES = JSON_STRINGS | NUMBERS | LITERALS
ATTRS = any_case(st.sampled_from(PATHS))


def grammar_filters() -> st.SearchStrategy[str]:
    comparison = st.tuples(ATTRS, any_case(st.sampled_from(COMPARE_OPS)), VALUES).map(" ".join)
    present = ATTRS.map(lambda path: f"{path} pr")
    value_path = st.tuples(any_case(st.sampled_from(["emails", "members", "addresses", "groups", "phoneNumbers",
                                                     f"{ENTERPRISE_URN}:manager", "name"])),
                           comparison | present).map(lambda pair: f"{pair[0]}[{pair[1].split('.', 1)[-1]}]")
    leaf = comparison | present | value_path

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        joined = st.tuples(inner, any_case(st.sampled_from(["and", "or"])), inner).map(" ".join)
        return joined | inner.map(lambda text: f"({text})") | inner.map(lambda text: f"not ({text})")

    well_formed = st.recursive(leaf, extend, max_leaves=10)
    junk = st.sampled_from(["(", ")", "[", "]", " and", "or ", "not", '"', ".", ":", "\\", "\x00", "\t", " ", "pr"])
    # Corrupt some: insert junk tokens at random places.
    return well_formed | st.tuples(well_formed, st.lists(st.tuples(st.integers(0, 200), junk), max_size=3)).map(
        lambda pair: _insert(*pair))


def _insert(text: str, edits: list[tuple[int, str]]) -> str:
    for position, fragment in edits:
        position = min(position, len(text))
        text = text[:position] + fragment + text[position:]
    return text


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A database with a few resources, so compiled filters really run."""
    path = tmp_path_factory.mktemp("fuzz-filter") / "scim.db"
    app, store = make_app(path.parent)
    client = ScimClient(app)
    user = client.post("/scim/v2/Users", json={
        "userName": "bjensen", "name": {"givenName": "Barbara"}, "active": True, "title": "Tour Guide",
        "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
        ENTERPRISE_URN: {"employeeNumber": "701984", "manager": {"value": "boss"}}}).json
    client.post("/scim/v2/Groups", json={"displayName": "Tour Guides", "members": [{"value": user["id"]}]})
    yield store
    store.close()


def filter_parses_compiles_and_runs(store: Store, text: str) -> None:
    started = time.perf_counter()
    try:
        node = parse_filter(text)
    except FilterError:
        return
    for rtype in TYPES:
        try:
            compile_filter(rtype, node)
        except FilterError:
            pass
    try:
        with store.read() as conn:
            find(conn, list(TYPES), node, None, False, 0, 10)
    except FilterError:
        pass
    assert time.perf_counter() - started < 1


FILTER_SETTINGS = settings(max_examples=150, deadline=timedelta(seconds=1),
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


@FILTER_SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_text_is_a_filter_or_a_filter_error(store: Store, text: str) -> None:
    filter_parses_compiles_and_runs(store, text)


@FILTER_SETTINGS
@given(text=grammar_filters())
def test_grammar_shaped_text_is_a_filter_or_a_filter_error(store: Store, text: str) -> None:
    filter_parses_compiles_and_runs(store, text)


# -- (b) PATCH over HTTP ------------------------------------------------------------------------


def patch_paths(rtype: ResourceType) -> list[str]:
    """Paths a PATCH may name on this type, qualified and not, with value filters; near misses too."""
    paths = ["id", "meta.version", "schemas", "nope", "name..x", "members[value eq", ENTERPRISE_URN, "groups",
             'emails[type eq "work"]', "urn:x:y", ""]
    for schema in rtype.schemas:
        prefix = "" if schema is rtype.core else f"{schema.id}:"
        for attr in schema.attributes:
            paths.append(prefix + attr.name)
            for sub in attr.sub_attributes:
                paths += [f"{prefix}{attr.name}.{sub.name}", f'{prefix}{attr.name}[{sub.name} eq "work"]',
                          f'{prefix}{attr.name}[type eq "work"].{sub.name}', f"{prefix}{attr.name}[{sub.name} pr]",
                          f'{prefix}{attr.name}[value eq "<m1>"]']
    return paths


def patch_bodies(rtype: ResourceType) -> st.SearchStrategy[Any]:
    names = [a.name for s in rtype.schemas for a in s.attributes] + ["value", "type", "primary", "display", "$ref",
                                                                     "givenName", ENTERPRISE_URN, "id", "meta"]
    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=6) | st.sampled_from(["", "True", "work", "<m1>", "<m2>", "<missing>", "x@example.com",
                                                        "2011-05-13T04:42:34Z", "\x00", "a" * 300]))
    element = st.fixed_dictionaries({}, optional={"value": st.sampled_from(["<m1>", "<m2>", "x@y", 5]),
                                                  "type": st.sampled_from(["work", "home", "User"]),
                                                  "primary": st.booleans() | st.just("true")})
    keys = any_case(st.sampled_from(names)) | st.text(max_size=4)
    values = st.recursive(scalars | element, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(keys, inner, max_size=3), max_leaves=8)
    ops = any_case(st.sampled_from(["add", "replace", "remove"])) | st.sampled_from(["move", "copy", "", 1, None])
    paths = any_case(st.sampled_from(patch_paths(rtype))) | st.text(max_size=10) | st.integers() | st.none()
    operation = (st.fixed_dictionaries({"op": ops, "path": paths, "value": values})
                 | st.fixed_dictionaries({"op": ops, "value": st.dictionaries(keys, values, max_size=4)})
                 | st.fixed_dictionaries({"op": ops}, optional={"path": paths, "value": values}))
    well_formed = st.fixed_dictionaries({"schemas": st.just([PATCH_URN]), "Operations": st.lists(operation, max_size=5)})
    junk = st.fixed_dictionaries({}, optional={"schemas": st.sampled_from([[PATCH_URN], ["urn:x"], "x", None]),
                                               "Operations": st.lists(operation | values, max_size=3) | values}) | values
    return well_formed | well_formed | well_formed | junk


@pytest.fixture(scope="module")
def patch_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ScimClient, dict[str, str]]]:
    """An app and three users to be members; each example gets a fresh User or Group."""
    app, store = make_app(tmp_path_factory.mktemp("fuzz-patch"))
    client = ScimClient(app)
    members = {f"<m{i}>": client.post("/scim/v2/Users", json={"userName": f"member-{i}"}).json["id"] for i in (1, 2, 3)}
    yield client, members
    store.close()


BEFORE = {
    USER_TYPE.name: {"userName": "fuzz-user", "displayName": "Fuzz", "active": True, "title": "t",
                     "name": {"givenName": "F", "familyName": "Uzz"},
                     "emails": [{"value": "f@example.com", "type": "work", "primary": True},
                                {"value": "h@example.com", "type": "home"}],
                     "phoneNumbers": [{"value": "+1 555", "type": "work"}],
                     ENTERPRISE_URN: {"department": "QA", "manager": {"value": "<m3>"}}},
    GROUP_TYPE.name: {"displayName": "fuzz-group", "members": [{"value": "<m1>"}, {"value": "<m2>"}]},
}


def with_ids(value: Any, ids: dict[str, str]) -> Any:
    """Put the member users' ids where the strategies wrote <m1>, <m2>, <m3>."""
    if isinstance(value, str):
        return ids.get(value, value.replace("<m1>", ids["<m1>"]))
    if isinstance(value, list):
        return [with_ids(item, ids) for item in value]
    if isinstance(value, dict):
        return {with_ids(key, ids): with_ids(item, ids) for key, item in value.items()}
    return value


PATCH_SETTINGS = settings(max_examples=150, deadline=timedelta(seconds=1),
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("rtype", TYPES, ids=lambda rtype: rtype.name)
def test_random_patches_over_http_answer_2xx_or_a_scim_4xx(patch_client: tuple[ScimClient, dict[str, str]],
                                                           rtype: ResourceType) -> None:
    client, ids = patch_client
    endpoint = f"/scim/v2{rtype.endpoint}"

    @PATCH_SETTINGS
    @given(body=patch_bodies(rtype))
    def check(body: Any) -> None:
        created = client.post(endpoint, json=with_ids(BEFORE[rtype.name], ids))
        assert created.status_code == 201, created.get_data(as_text=True)
        url = f"{endpoint}/{created.json['id']}"
        try:
            before = client.get(url).get_data()
            started = time.perf_counter()
            # The stdlib writes integers beyond 64 bits, as JSON allows; orjson would refuse them.
            response = client.patch(url, data=json.dumps(with_ids(body, ids)), content_type="application/scim+json")
            assert time.perf_counter() - started < 1
            if response.status_code >= 300:
                assert 400 <= response.status_code < 500, response.get_data(as_text=True)
                error = response.json
                assert error["schemas"] == [ERROR_URN] and error["status"] == str(response.status_code)
                assert client.get(url).get_data() == before, "a failed PATCH changed the resource"
            else:
                assert response.status_code in (200, 204)
                after = client.get(url)
                assert after.status_code == 200
                if response.status_code == 200:
                    assert response.headers["ETag"] == after.json["meta"]["version"]
        finally:
            assert client.delete(url).status_code == 204

    check()


def test_the_schema_urns_are_in_the_generated_paths() -> None:
    """Guards the generators: qualified paths of every schema are drawn from."""
    assert any(path.startswith(USER_URN) for path in PATHS)
    assert any(path.startswith(GROUP_URN) for path in PATHS)
    assert any(path.startswith(ENTERPRISE_URN) for path in PATHS)
