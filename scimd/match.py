"""What a filter means for a resource type (RFC 7644 §3.4.2.2), and a reference evaluator.

`filter.py` knows syntax; this module resolves every path against the schemas of a ResourceType,
checks every operator against the attribute's type, and evaluates filters over resources as GET
returns them (canonical-case keys, extension attributes under their schema URN). The PATCH engine
uses `element_matches` to select elements of a multi-valued attribute; the SQL compiler must give
the same answers as `matches`. The semantics, exactly:

- An expression on an attribute matches when ANY of its values matches: each element of a
  multi-valued attribute, the value of a singular one; an absent attribute has no values, so
  every comparison on it is false, `ne` included.
- A value "is present" unless it is null, "", [] or {}. `pr` is true when at least one value is
  present; `eq null` when none is, `ne null` when one is.
- Strings, references and binaries: caseExact=false compares `fold_case` keys for every operator,
  caseExact=true the text as is; gt/ge/lt/le order by code point; co/sw/ew are substring,
  prefix and suffix. Booleans and numbers compare by value. dateTimes compare chronologically
  (canonical `format_datetime` text on both sides); a stored value of the wrong type, or a
  dateTime that does not parse, never matches.
- `emails co "x"` on a multi-valued complex attribute means `emails.value co "x"` (implicit_value);
  other complex attributes cannot be compared. `pr` on a complex attribute looks at its elements.
- `emails.value eq "x"` matches when any element's value does; `emails[type eq "work" and value co
  "x"]` only when one and the same element satisfies the whole inner filter. A valuePath on a
  singular complex attribute (Entra: `name[givenName eq "x"]`) tests its one value.
- `not (f)` is the plain negation of f: it matches a resource where f does not, absent attributes included.
- Validation (unknown attributes, operator/type mismatches, bad values) happens before any
  resource is looked at, so an invalid filter fails even on an empty list.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from scimd.filter import And, AttrPath, Compare, FilterError, Node, Not, Or, Present, ValuePath, to_text
from scimd.schema import (BINARY, BOOLEAN, COMMON, COMPLEX, DATETIME, DECIMAL, INTEGER, REFERENCE, STRING,
                          Attribute, ResourceType, Schema, fold_case, format_datetime, parse_datetime)

Doc = dict[str, Any]
Values = Callable[[Doc], list[Any]]  # the values of one attribute in a resource or element
Predicate = Callable[[Doc], bool]
# path -> (attribute, sub-attribute or None, raw values of the attribute)
_Field = Callable[[AttrPath], tuple[Attribute, Attribute | None, Values]]

_ORDERED = ("eq", "ne", "gt", "ge", "lt", "le")
_TEXT = ("eq", "ne", "co", "sw", "ew")
OPERATORS: dict[str, tuple[str, ...]] = {  # RFC 7644 Table 3, per attribute type (RFC 7643 §2.3)
    STRING: (*_TEXT, "gt", "ge", "lt", "le"),
    REFERENCE: (*_TEXT, "gt", "ge", "lt", "le"),
    BINARY: _TEXT,
    BOOLEAN: ("eq", "ne"),
    DATETIME: _ORDERED,
    INTEGER: _ORDERED,
    DECIMAL: _ORDERED,
}
_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "ge": operator.ge, "lt": operator.lt,
    "le": operator.le, "co": operator.contains, "sw": str.startswith, "ew": str.endswith,
}
_EXPECTED = {BOOLEAN: "true or false", DATETIME: 'a dateTime such as "2011-05-13T04:42:34Z"',
             INTEGER: "a number", DECIMAL: "a number"}


@dataclass(frozen=True, slots=True)
class Resolved:
    schema: Schema
    attr: Attribute
    sub: Attribute | None


def resolve(rtype: ResourceType, path: AttrPath) -> Resolved:
    """The schema, attribute and sub-attribute a path names, any case (RFC 7644 §3.10)."""
    found = rtype.resolve(path.urn, path.attr) if path.attr else None
    sub = found[1].sub(path.sub) if found and path.sub is not None else None
    if found is None or (path.sub is not None and sub is None):
        raise FilterError(f"unknown attribute '{to_text(path)}'", path.position)
    return Resolved(found[0], found[1], sub)


def resolve_relative(parent: Attribute, path: AttrPath) -> Attribute:
    """The sub-attribute of `parent` that a path inside `parent[...]` names."""
    attr = parent.sub(path.attr) if path.urn is None and path.sub is None else None
    if attr is None:
        raise FilterError(f"unknown attribute '{to_text(path)}' in '{parent.name}[...]'", path.position)
    return attr


def implicit_value(attr: Attribute) -> Attribute | None:
    """The sub-attribute compared when a filter names a complex attribute alone: `emails co "x"`
    is `emails.value co "x"` (RFC 7644 §3.4.2.2 multi-valued matching), and Entra's
    `manager eq "id"` is `manager.value eq "id"` (idp-dialects E15)."""
    return attr.sub("value") if attr.type == COMPLEX else None


def check_comparison(attr: Attribute, op: str, value: object, position: int) -> object:
    """Check `attr op value` against the attribute type; return the value to compare against."""
    if attr.type == COMPLEX:
        inner = implicit_value(attr)
        if inner is None:
            raise FilterError(f"complex attribute '{attr.name}' cannot be compared: name one of its sub-attributes",
                              position)
        attr = inner
    if op not in OPERATORS[attr.type]:
        raise FilterError(f"operator '{op}' is not supported on {attr.type} attribute '{attr.name}'", position)
    if value is None:
        if op in ("eq", "ne"):
            return None
        raise FilterError(f"operator '{op}' cannot compare with null", position)
    if attr.type == BOOLEAN:
        if isinstance(value, str) and value.lower() in ("true", "false"):  # Entra: roles[primary eq "True"]
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
    elif attr.type == DATETIME:
        if (moment := _datetime_key(value)) is not None:
            return moment
    elif attr.type in (INTEGER, DECIMAL):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    else:  # string, reference, binary: leniently, `externalId eq 123` compares with the JSON text "123"
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    raise FilterError(f"expected {_EXPECTED[attr.type]} for {attr.type} attribute '{attr.name}', "
                      f"got {orjson.dumps(value).decode()}", position)


def predicate(node: Node, rtype: ResourceType) -> Predicate:
    """Validate `node` for `rtype` and return the test of one resource: build once, apply to many."""
    return _compile(node, lambda path: _field(rtype, path), top_level=True)


def validate(node: Node, rtype: ResourceType) -> None:
    """Raise FilterError unless every path resolves and every comparison suits its attribute."""
    predicate(node, rtype)


def matches(node: Node, resource: Doc, rtype: ResourceType) -> bool:
    return predicate(node, rtype)(resource)


def element_matches(node: Node, element: Doc, parent: Attribute) -> bool:
    """Does one element of `parent` satisfy the inner filter of `parent[...]` (PATCH, RFC 7644 §3.5.2)?"""
    return _compile(node, _relative(parent), top_level=False)(element)


def _compile(node: Node, field: _Field, top_level: bool) -> Predicate:
    match node:
        case Present(path):
            _, values = _leaf(*field(path), implicit=False)
            return lambda doc: any(map(_present, values(doc)))
        case Compare(path, op, value):
            attr, values = _leaf(*field(path), implicit=True)
            target = check_comparison(attr, op, value, path.position)
            if target is None:  # eq null: no value is present; ne null: one is
                wanted = op == "ne"
                return lambda doc: any(map(_present, values(doc))) is wanted
            key, test = _key(attr), _TESTS[op]
            want = key(target)
            return lambda doc: any((have := key(v)) is not None and test(have, want) for v in values(doc))
        case And(children):
            tests = [_compile(child, field, top_level) for child in children]
            return lambda doc: all(test(doc) for test in tests)
        case Or(children):
            tests = [_compile(child, field, top_level) for child in children]
            return lambda doc: any(test(doc) for test in tests)
        case Not(child):
            test = _compile(child, field, top_level)
            return lambda doc: not test(doc)
        case ValuePath(path, inner):
            if not top_level:
                raise FilterError("a valuePath cannot contain another valuePath", path.position)
            parent, sub, elements = field(path)
            if sub is not None or parent.type != COMPLEX:
                raise FilterError(f"'{to_text(path)}' is not a complex attribute: it takes no [filter]", path.position)
            test = _compile(inner, _relative(parent), top_level=False)
            return lambda doc: any(isinstance(element, dict) and test(element) for element in elements(doc))
        case _:
            raise TypeError(f"not a filter node: {node!r}")


def _field(rtype: ResourceType, path: AttrPath) -> tuple[Attribute, Attribute | None, Values]:
    found = resolve(rtype, path)
    if found.attr.returned == "never":  # a password is write-only: filtering on it would be an oracle
        raise FilterError(f"attribute '{found.attr.name}' cannot be used in a filter", path.position)
    key, name, multi = found.schema.id, found.attr.name, found.attr.multi_valued
    nested = found.schema is not rtype.core and found.schema is not COMMON  # extensions sit under their URN

    def values(doc: Doc) -> list[Any]:
        container = doc.get(key) if nested else doc
        value = container.get(name) if isinstance(container, dict) else None
        return value if multi and isinstance(value, list) else [value]

    return found.attr, found.sub, values


def _relative(parent: Attribute) -> _Field:
    def field(path: AttrPath) -> tuple[Attribute, Attribute | None, Values]:
        name = (attr := resolve_relative(parent, path)).name
        return attr, None, lambda element: [element.get(name)]

    return field


def _leaf(attr: Attribute, sub: Attribute | None, values: Values, implicit: bool) -> tuple[Attribute, Values]:
    """The attribute a test applies to, and its values: those of a sub-attribute (named or
    implicit) come from every element of the attribute."""
    if sub is None and implicit:
        sub = implicit_value(attr)
    if sub is None:
        return attr, values
    name = sub.name
    return sub, lambda doc: [element.get(name) for element in values(doc) if isinstance(element, dict)]


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})


def _key(attr: Attribute) -> Callable[[Any], Any]:
    """The comparison key of a value of `attr`, or None for a value of the wrong type (never matches)."""
    if attr.type == BOOLEAN:
        return lambda value: value if isinstance(value, bool) else None
    if attr.type in (INTEGER, DECIMAL):
        return lambda value: value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if attr.type == DATETIME:
        return _datetime_key
    if attr.case_exact:
        return lambda value: value if isinstance(value, str) else None
    return lambda value: fold_case(value) if isinstance(value, str) else None


def _datetime_key(value: Any) -> str | None:
    """Fixed-width UTC text, so that text order is chronological; None when `value` is no dateTime."""
    if not isinstance(value, str):
        return None
    try:
        return format_datetime(parse_datetime(value))
    except (ValueError, OverflowError):  # OverflowError: year 1 with a positive offset
        return None
