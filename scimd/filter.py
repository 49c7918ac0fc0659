"""Parser for SCIM filters (RFC 7644 §3.4.2.2) and PATCH paths (RFC 7644 §3.5.2).

A small tokenizer feeds a recursive-descent parser in the style of pypa/packaging's
`_parser.py`: the docstring of each `_parse_x` method is its grammar rule (RFC 7644 Figure 1,
rewritten so that `and` binds tighter than `or` in the tree itself). Every back end (the SQL
compiler, the reference evaluator in `match.py`, PATCH) therefore sees plain n-ary And/Or nodes.

The module knows syntax only: whether an attribute exists, and which operators suit its type,
is `match.py`'s business. Every failure is one FilterError carrying a 0-based position; input
length, nesting depth and the number of terms are bounded so that hostile input fails fast
with a FilterError, never a RecursionError.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn

import orjson

MAX_DEPTH = 32  # nesting of "(", "not (" and "[": 5 Python frames per level stays far from the recursion limit
MAX_LENGTH = 10_000  # characters
MAX_TERMS = 500  # attribute expressions (comparisons and `pr`)

COMPARE_OPS = ("eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le")
# Reserved in path position: they start or join expressions, so `not x` or a dangling `and` read as errors.
_RESERVED = ("and", "or", "not")
_LITERALS: dict[str, bool | None] = {"true": True, "false": False, "null": None}


class FilterError(ValueError):
    """The one error of this module: what was expected and where (0-based character offset)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return f"{self.message} at position {self.position}"


@dataclass(frozen=True, slots=True)
class AttrPath:
    """`[urn ":"] attr ["." sub]`, names as written. `attr` is "" only for a bare extension URN
    (a PATCH path). Equality ignores `position`: the same path written elsewhere is the same path."""

    urn: str | None
    attr: str
    sub: str | None
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Compare:
    path: AttrPath
    op: str  # lower case, one of COMPARE_OPS
    value: str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Present:
    path: AttrPath


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]  # two or more, none of them an And


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]  # two or more, none of them an Or


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class ValuePath:
    """`path[filter]`: `filter` holds paths relative to `path` (a bare sub-attribute name each)."""

    path: AttrPath
    filter: Node


@dataclass(frozen=True, slots=True)
class PatchPath:
    """A PATCH `path`: `attr` (its own `.sub` when there is no filter), or `attr[filter].sub`."""

    attr: AttrPath
    filter: Node | None
    sub: str | None


Node = Compare | Present | And | Or | Not | ValuePath


class _Token(NamedTuple):  # made per token: a frozen dataclass sets each field through object.__setattr__
    kind: str  # "(" ")" "[" "]" "." "string" "word" "end"
    text: str
    position: int


# A word is everything up to a space, bracket or quote: paths, operators, keywords, numbers and
# Entra's unquoted values alike; the parser decides what a word means from where it stands.
# After the spaces some alternative always matches (a '"' left over is an unterminated string,
# `end` takes trailing spaces), so the scan never backtracks into them: linear time.
_TOKEN = re.compile(r'\s*(?:(?P<punct>[()\[\].])|(?P<string>"(?:[^"\\]|\\.)*")|(?P<word>[^\s()\[\]".][^\s()\[\]"]*)'
                    r'|(?P<unterminated>")|(?P<end>\Z))', re.DOTALL)
_NAME = r"(?:[A-Za-z][A-Za-z0-9_-]*|\$ref)"  # RFC 7643 §2.1 ATTRNAME, plus `$ref` (§2.3.7), any case
_ATTR_PATH = re.compile(rf"({_NAME})(?:\.({_NAME}))?", re.IGNORECASE)
_NAME_ONLY = re.compile(_NAME, re.IGNORECASE)
_URN = re.compile(r"urn(?::[A-Za-z0-9._-]+)+", re.IGNORECASE)
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # JSON number (RFC 8259 §6)


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or ""
        if kind == "unterminated":
            raise FilterError("unterminated string", match.start(kind))
        word = match[kind]
        tokens.append(_Token(word if kind == "punct" else kind, word, match.start(kind)))
        if kind == "end":
            break
    return tokens


def _split_path(text: str, bare_urn: bool) -> tuple[str | None, str, str | None] | None:
    """(urn, attr, sub) of a path word, or None. The URN contains dots (`:2.0:`): split at its last colon."""
    urn = None
    if text[:4].lower() == "urn:":
        urn, _, text = text.rpartition(":")
        if not _URN.fullmatch(urn):
            return None
        # Schema URNs end in `:<version>:<Name>` (RFC 7643 §8.7), attribute names never start with a
        # digit: so `...:enterprise:2.0:User` is the whole extension, not attribute `User` of `...:2.0`.
        if bare_urn and _VERSION.fullmatch(urn.rpartition(":")[2]) and _NAME_ONLY.fullmatch(text):
            return f"{urn}:{text}", "", None
    match = _ATTR_PATH.fullmatch(text)
    return (urn, match[1], match[2]) if match else None


def _alternatives(expected: tuple[str, ...]) -> str:
    return expected[0] if len(expected) == 1 else f"{', '.join(expected[:-1])} or {expected[-1]}"


class _Parser:
    def __init__(self, text: str, what: str) -> None:
        if len(text) > MAX_LENGTH:
            raise FilterError(f"{what} is longer than {MAX_LENGTH} characters", MAX_LENGTH)
        self.what = what  # "filter" or "path", for "end of ..." in messages
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.terms = 0
        self.in_value_path = False

    # Token helpers (packaging's Tokenizer.check/expect/read).

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def next(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        """Consume the keyword `word` (any case) if it comes next."""
        token = self.peek()
        if token.kind == "word" and token.text.lower() == word:
            self.index += 1
            return True
        return False

    def fail(self, expected: tuple[str, ...], token: _Token) -> NoReturn:
        text = token.text if len(token.text) <= 40 else f"{token.text[:37]}..."
        got = f"end of {self.what}" if token.kind == "end" else repr(text)
        raise FilterError(f"expected {_alternatives(expected)}, got {got}", token.position)

    def expect_end(self, expected: tuple[str, ...]) -> None:
        if self.peek().kind != "end":
            self.fail((*expected, f"end of {self.what}"), self.peek())

    # Grammar.

    def _parse_filter(self) -> Node:
        """filter = and_expr *("or" and_expr)"""
        children = [self._parse_and()]
        while self.keyword("or"):
            children.append(self._parse_and())
        return _join(Or, children)

    def _parse_and(self) -> Node:
        """and_expr = not_expr *("and" not_expr)"""
        children = [self._parse_not()]
        while self.keyword("and"):
            children.append(self._parse_not())
        return _join(And, children)

    def _parse_not(self) -> Node:
        """not_expr = "not" "(" filter ")" / atom"""
        if not self.keyword("not"):
            return self._parse_atom()
        if self.peek().kind != "(":
            self.fail(("'(' after 'not'",), self.peek())
        return Not(self._parse_group("(", ")"))

    def _parse_group(self, opening: str, closing: str) -> Node:
        """group = "(" filter ")" / "[" filter "]" """
        start = self.next()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"{self.what} is nested deeper than {MAX_DEPTH} levels", start.position)
        node = self._parse_filter()
        end = self.peek()
        if end.kind == "end":  # point at the bracket left open, not at the end of the text
            raise FilterError(f"expected '{closing}' to close '{opening}'", start.position)
        if end.kind != closing:
            self.fail(("'and'", "'or'", f"'{closing}'"), end)
        self.index += 1
        self.depth -= 1
        return node

    def _parse_atom(self) -> Node:
        """atom = "(" filter ")" / path "[" valFilter "]" ["." subAttr comparison] / path comparison"""
        if self.peek().kind == "(":
            return self._parse_group("(", ")")
        path = self._parse_path(("an attribute path", "'('", "'not'"), bare_urn=False)
        if self.peek().kind != "[":
            return self._parse_comparison(path)
        inner, sub = self._parse_value_path(path)
        # Entra sends `emails[type eq "work"].value eq "x"`: the same element must satisfy both.
        return ValuePath(path, inner if sub is None else _join(And, [inner, self._parse_comparison(sub)]))

    def _parse_path(self, expected: tuple[str, ...], bare_urn: bool) -> AttrPath:
        """path = [URN ":"] ATTRNAME ["." subAttr]"""
        token = self.peek()
        parts = None
        if token.kind == "word" and token.text.lower() not in _RESERVED:
            parts = _split_path(token.text, bare_urn)
        if parts is None:
            self.fail(expected, token)
        self.index += 1
        return AttrPath(*parts, token.position)

    def _parse_value_path(self, path: AttrPath) -> tuple[Node, AttrPath | None]:
        """valuePath = path "[" valFilter "]" ["." subAttr]   (valFilter: a filter without valuePath)"""
        bracket = self.peek()
        if self.in_value_path:
            raise FilterError("a valuePath cannot contain another valuePath", bracket.position)
        if path.sub is not None:
            raise FilterError("'[' cannot follow a sub-attribute", bracket.position)
        self.in_value_path = True
        inner = self._parse_group("[", "]")
        self.in_value_path = False
        dot = self.peek()
        if dot.kind != ".":
            return inner, None
        name = self.tokens[self.index + 1]
        if (dot.position != self.tokens[self.index - 1].position + 1 or name.position != dot.position + 1
                or name.kind != "word" or not _NAME_ONLY.fullmatch(name.text)):
            raise FilterError("expected a sub-attribute name right after ']' and '.'", dot.position)
        self.index += 2
        return inner, AttrPath(None, name.text, None, name.position)

    def _parse_comparison(self, path: AttrPath) -> Compare | Present:
        """comparison = "pr" / compareOp compValue"""
        token = self.next()
        op = token.text.lower() if token.kind == "word" else ""
        if op == "pr":
            node: Compare | Present = Present(path)
        elif op in COMPARE_OPS:
            node = Compare(path, op, self._parse_value())
        else:
            self.fail(("a comparison operator", "'pr'"), token)
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise FilterError(f"{self.what} has more than {MAX_TERMS} attribute expressions", path.position)
        return node

    def _parse_value(self) -> str | int | float | bool | None:
        """compValue = false / null / true / number / string   (JSON, RFC 8259); or a bare word"""
        token = self.next()
        if token.kind == "string":
            try:
                return orjson.loads(token.text)  # every JSON escape, \uXXXX included
            except orjson.JSONDecodeError:
                raise FilterError(f"invalid JSON string {token.text[:40]!r}", token.position) from None
        if token.kind == "word":
            word = token.text.lower()
            if word in _LITERALS:
                return _LITERALS[word]
            if _NUMBER.fullmatch(token.text):
                return _number(token)
            # Any other unquoted word is a string: Entra's documented `externalId eq jyoung` and
            # unquoted GUIDs (E3), Microsoft's Postman `meta.Created gt 2015-10-10T14:38:21-07:00` (E31).
            if word not in (*_RESERVED, *COMPARE_OPS, "pr"):
                return token.text
        self.fail(("a value",), token)


def _number(token: _Token) -> int | float:
    match = _NUMBER.fullmatch(token.text)
    if match is None:
        raise FilterError(f"invalid number {token.text[:40]!r}", token.position)
    if match[1] or match[2]:
        number = float(token.text)
        if math.isfinite(number):
            return number
    # Integers must fit SQLite's 64 bits (and stay clear of int()'s 4300-digit limit).
    elif len(token.text) <= 20 and -(2**63) <= (integer := int(token.text)) < 2**63:
        return integer
    raise FilterError(f"number {token.text[:40]!r} is out of range", token.position)


def _join(kind: type[And] | type[Or], nodes: list[Node]) -> Node:
    """One node, or an n-ary And/Or with nested nodes of the same kind flattened (both associate)."""
    flat: list[Node] = []
    for node in nodes:
        flat.extend(node.children if isinstance(node, kind) else (node,))
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


def parse_filter(text: str) -> Node:
    """Parse a `filter` query parameter or SearchRequest attribute (RFC 7644 §3.4.2.2, §3.4.3)."""
    parser = _Parser(text, "filter")
    node = parser._parse_filter()
    parser.expect_end(("'and'", "'or'"))
    return node


def parse_path(text: str) -> PatchPath:
    """Parse a PATCH `path` (RFC 7644 §3.5.2).

    PATH = attrPath / valuePath ["." subAttr] / extension URN
    """
    parser = _Parser(text, "path")
    attr = parser._parse_path(("an attribute path",), bare_urn=True)
    inner = sub = None
    if attr.attr and parser.peek().kind == "[":
        inner, sub_path = parser._parse_value_path(attr)
        sub = sub_path.attr if sub_path else None
    parser.expect_end(())
    return PatchPath(attr, inner, sub)


def to_text(node: Node | AttrPath | PatchPath) -> str:
    """Canonical text: parses back to an equal tree. Every operand of and/or is parenthesised,
    keywords are lower case, values are JSON, names keep the case they were written in."""
    match node:
        case AttrPath(urn, attr, sub):
            text = ":".join(part for part in (urn, attr) if part)
            return f"{text}.{sub}" if sub else text
        case Compare(path, op, value):
            return f"{to_text(path)} {op} {orjson.dumps(value).decode()}"
        case Present(path):
            return f"{to_text(path)} pr"
        case And(children):
            return " and ".join(f"({to_text(child)})" for child in children)
        case Or(children):
            return " or ".join(f"({to_text(child)})" for child in children)
        case Not(child):
            return f"not ({to_text(child)})"
        case ValuePath(path, inner):
            return f"{to_text(path)}[{to_text(inner)}]"
        case PatchPath(attr, inner, sub):
            text = to_text(attr) if inner is None else f"{to_text(attr)}[{to_text(inner)}]"
            return f"{text}.{sub}" if sub else text
        case _:
            raise TypeError(f"not a filter node: {node!r}")
