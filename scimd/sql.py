"""Filters and sort orders compiled to parameterised SQL over the `resources` table
(RFC 7644 §3.4.2.2, §3.4.2.3), with the semantics of scimd/match.py, its reference.

Values are always bound (`?`), never spliced; only identifiers and JSON paths taken from the
schema definitions appear in the SQL text. caseExact=false strings compare as `fold_case` keys:
pre-folded indexed columns (name_key, value_keys) wherever they exist, `scim_fold()` elsewhere.
A comparison with a value on an attribute value_keys holds is a range of that index, never a
parse of each JSON document (issue #4). Every atom is written so it is never NULL, which keeps
`not (...)` the plain negation.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from scimd import trace
from scimd.filter import And, AttrPath, Compare, FilterError, Node, Not, Or, Present, ValuePath, to_text
from scimd.match import Resolved, check_comparison, implicit_value, resolve, resolve_relative
from scimd.schema import (
    BINARY, COMMON, COMPLEX, GROUP_TYPE, REFERENCE, SCHEMAS_ATTRIBUTE, STRING, Attribute,
    ResourceType, Schema, fold_case,
)
from scimd.store import (
    INDEXED_ATTRIBUTES, NAME_KEY_ATTRIBUTES, NOTHING_RELATED, IndexedAttribute, Related, Row, row_columns, rows_and_keys,
)

_COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}

# Attributes kept in their own columns: (attribute name, sub-attribute) -> (SQL, pre-folded, NOT NULL).
_COLUMNS: dict[tuple[str, str | None], tuple[str, bool, bool]] = {
    ("id", None): ("r.id", False, True),
    ("externalId", None): ("r.external_id", False, False),
    ("meta", "created"): ("r.created", False, True),
    ("meta", "lastModified"): ("r.last_modified", False, True),
    ("meta", "resourceType"): ("r.type", False, True),
    ("meta", "version"): ("('W/\"' || r.version || '\"')", False, True),
}
# value_keys' attributes per type, by (schema URN, attribute name, sub-attribute name).
_INDEXED: dict[str, dict[tuple[str, str, str | None], IndexedAttribute]] = {
    type_name: {(a.schema.id, a.attr.name, a.sub.name if a.sub else None): a for a in attributes}
    for type_name, attributes in INDEXED_ATTRIBUTES.items()}


@dataclass(slots=True)
class Compiled:
    sql: str
    params: list[Any] = field(default_factory=list)
    # An indexed `r.id IN (...)` lookup is present: the type test must not claim an index then,
    # or SQLite scans every resource of the type instead of probing the lookup's few ids.
    index_lookup: bool = False


def _json_path(schema: Schema, rtype: ResourceType, *names: str) -> str:
    """`$.name.givenName`, `$."urn:...:User".department`: names come from the schema, never the client."""
    steps = [] if schema is rtype.core or schema is COMMON else [f'"{schema.id}"']
    return "$." + ".".join(steps + [f'"{name}"' if not name.isalnum() else name for name in names])


def _is_text(attr: Attribute) -> bool:
    return attr.type in (STRING, REFERENCE, BINARY)


def _folds(attr: Attribute) -> bool:
    return _is_text(attr) and not attr.case_exact


class _Compiler:
    """Compiles one filter for one resource type; `params` collects the bound values in order."""

    def __init__(self, rtype: ResourceType, unknown_is_false: bool = False) -> None:
        self.rtype = rtype
        self.params: list[Any] = []
        self.index_lookup = False
        self._aliases = 0
        # On /.search across types, `userName eq "x" or displayName eq "y"` must still find groups.
        self.unknown_is_false = unknown_is_false

    def resolve(self, path: AttrPath) -> Resolved | None:
        """The path's attribute, or None when it is unknown and counts as false (root search)."""
        try:
            return resolve(self.rtype, path)
        except FilterError:
            if self.unknown_is_false:
                return None
            raise

    def alias(self, prefix: str) -> str:
        self._aliases += 1
        return f"{prefix}{self._aliases}"

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def node(self, node: Node) -> str:
        match node:
            case And(children):
                return "(" + " AND ".join(self.node(child) for child in children) + ")"
            case Or(children):
                return "(" + " OR ".join(self.node(child) for child in children) + ")"
            case Not(child):
                return f"(NOT {self.node(child)})"
            case Compare() | Present():
                return self.attribute_expression(node)
            case ValuePath(path, inner):
                return self.value_path(path, inner)
        raise AssertionError(f"unknown filter node {node!r}")

    # -- attribute expressions at the top level -----------------------------------------------

    def attribute_expression(self, node: Compare | Present) -> str:
        found = self.resolve(node.path)
        if found is None:
            return "0"
        attr, sub = found.attr, found.sub
        if attr.name == "password":
            raise FilterError("'password' cannot be filtered on", node.path.position)
        if attr is SCHEMAS_ATTRIBUTE:
            return self.schemas(node)
        column = self._column(found.schema, attr, sub)
        if column is not None:
            sql, prefolded, not_null = column
            return self.scalar(node, sub or attr, sql, prefolded, not_null)
        if self._is_membership(attr):
            return self.membership(node, attr, sub)
        if attr.multi_valued:
            return self.multi_valued(node, found.schema, attr, sub)
        if sub is None and isinstance(node, Compare) and attr.type == COMPLEX:
            sub = implicit_value(attr)  # `manager eq "id"`; None leaves check_comparison to reject it
        indexed = self._value_key_lookup(found.schema, attr, sub, node)
        if indexed:
            return indexed
        names = (attr.name,) if sub is None else (attr.name, sub.name)
        expr = f"json_extract(r.doc, '{_json_path(found.schema, self.rtype, *names)}')"
        return self.scalar(node, sub or attr, expr, False, False)

    def _column(self, schema: Schema, attr: Attribute, sub: Attribute | None) -> tuple[str, bool, bool] | None:
        if schema is COMMON:
            return _COLUMNS.get((attr.name, sub.name if sub else None))
        if schema is self.rtype.core and sub is None and attr.name == NAME_KEY_ATTRIBUTES[self.rtype.name]:
            return "r.name_key", True, True
        return None

    def _is_membership(self, attr: Attribute) -> bool:
        return attr.name == ("members" if self.rtype is GROUP_TYPE else "groups") and self.rtype.core.attribute(
            attr.name) is attr

    def scalar(self, node: Compare | Present, attr: Attribute, expr: str, prefolded: bool, not_null: bool) -> str:
        """One value per resource (a column or a JSON scalar)."""
        if isinstance(node, Present):
            return f"({expr} IS NOT NULL)" if not_null or not _is_text(attr) else f"(coalesce({expr}, '') <> '')"
        value = check_comparison(attr, node.op, node.value, node.path.position)
        if value is None:
            return f"({expr} IS NULL)" if node.op == "eq" else f"({expr} IS NOT NULL)"
        if _folds(attr):
            value = fold_case(value)
            expr = expr if prefolded else f"scim_fold({expr})"
        return self.test(expr, node.op, value, not_null)

    def test(self, expr: str, op: str, value: Any, not_null: bool = False) -> str:
        """`expr op value`, never NULL (an absent value simply does not match)."""
        guard = "" if not_null else f"{expr} IS NOT NULL AND "
        if op in _COMPARISONS:
            return f"({guard}{expr} {_COMPARISONS[op]} {self.bind(value)})"
        if op == "co":
            return f"({guard}instr({expr}, {self.bind(value)}) > 0)"
        if op == "sw":
            return f"({guard}instr({expr}, {self.bind(value)}) = 1)"
        if op == "ew":
            return (f"({guard}length({expr}) >= length({self.bind(value)}) AND "
                    f"substr({expr}, length({expr}) - length({self.bind(value)}) + 1) = {self.bind(value)})")
        raise AssertionError(f"unknown operator {op!r}")

    def schemas(self, node: Compare | Present) -> str:
        """`schemas` is not stored: the core URN always, an extension's when it has data."""
        uris = f"SELECT {self.bind(self.rtype.core.id)} AS v" + "".join(
            f" UNION ALL SELECT {self.bind(ext.id)} WHERE json_type(r.doc, '$.\"{ext.id}\"') IS NOT NULL"
            for ext in self.rtype.extensions)
        alias = self.alias("s")
        condition = self._element_condition(node, SCHEMAS_ATTRIBUTE, f"{alias}.v")
        return f"EXISTS (SELECT 1 FROM ({uris}) AS {alias} WHERE {condition})"

    # -- multi-valued attributes stored as JSON arrays ---------------------------------------

    def multi_valued(self, node: Compare | Present, schema: Schema, attr: Attribute, sub: Attribute | None) -> str:
        array = _json_path(schema, self.rtype, attr.name)
        if isinstance(node, Present) and sub is None:
            return f"(coalesce(json_array_length(r.doc, '{array}'), 0) > 0)"
        leaf = sub or implicit_value(attr)
        if leaf is None:
            raise FilterError(f"complex attribute '{attr.name}' cannot be compared: name one of its sub-attributes",
                              node.path.position)
        indexed = self._value_key_lookup(schema, attr, leaf, node)
        if indexed:
            return indexed
        element = self.alias("e")
        condition = self._element_condition(node, leaf, f"json_extract({element}.value, '$.{leaf.name}')")
        exists = f"EXISTS (SELECT 1 FROM json_each(r.doc, '{array}') AS {element} WHERE {condition})"
        if isinstance(node, Compare) and node.value is None:
            return exists if node.op == "ne" else f"(NOT {exists})"
        return exists

    def _element_condition(self, node: Compare | Present, leaf: Attribute, expr: str) -> str:
        if isinstance(node, Compare):
            check_comparison(leaf, node.op, node.value, node.path.position)  # `gt null` etc. are errors
        if isinstance(node, Present) or node.value is None:
            return f"(coalesce({expr}, '') <> '')" if _is_text(leaf) else f"({expr} IS NOT NULL)"
        return self.scalar(node, leaf, expr, False, False)

    def _value_key_lookup(self, schema: Schema, attr: Attribute, sub: Attribute | None,
                          node: Compare | Present) -> str | None:
        """A comparison with a value through the value_keys index, when it holds the attribute.
        Same answer as the JSON (match.py): a resource matches when one of its values does, so when
        one of its keys does; one without the attribute has no keys, so even `ne` is false for it.
        `pr` and null comparisons keep the JSON path: only string values have keys."""
        if not isinstance(node, Compare) or node.value is None:
            return None
        indexed = _INDEXED[self.rtype.name].get((schema.id, attr.name, sub.name if sub else None))
        if indexed is None:
            return None
        value = check_comparison(indexed.leaf, node.op, node.value, node.path.position)
        key = fold_case(value) if _folds(indexed.leaf) else value
        self.index_lookup = True
        return (f"(r.id IN (SELECT resource_id FROM value_keys WHERE attr = {self.bind(indexed.key)} "
                f"AND {self.test('key', node.op, key, True)}))")

    # -- group membership (its own table) ------------------------------------------------------

    def membership(self, node: Compare | Present, attr: Attribute, sub: Attribute | None) -> str:
        """Group.members / User.groups, read from the members table (value, display, type)."""
        edge, other = self.alias("m"), self.alias("t")
        mine, theirs = ("group_id", "member_id") if self.rtype is GROUP_TYPE else ("member_id", "group_id")
        if isinstance(node, Present) and sub is None:
            return f"EXISTS (SELECT 1 FROM members AS {edge} WHERE {edge}.{mine} = r.id)"
        leaf = sub or implicit_value(attr)
        assert leaf is not None
        if isinstance(node, Compare) and node.op == "eq" and leaf.name == "value" and node.value is not None:
            value = check_comparison(leaf, "eq", node.value, node.path.position)
            # Index lookup both ways (members_by_member / primary key): members.value eq, groups.value eq.
            self.index_lookup = True
            return f"(r.id IN (SELECT {mine} FROM members WHERE {theirs} = {self.bind(value)}))"
        expr = self._membership_column(leaf, edge, theirs, other)
        condition = self._element_condition(node, leaf, expr)
        exists = (f"EXISTS (SELECT 1 FROM members AS {edge} JOIN resources AS {other} ON {other}.id = {edge}.{theirs} "
                  f"WHERE {edge}.{mine} = r.id AND {condition})")
        if isinstance(node, Compare) and node.value is None:
            return exists if node.op == "ne" else f"(NOT {exists})"
        return exists

    def _membership_column(self, leaf: Attribute, edge: str, theirs: str, other: str) -> str:
        columns = {"value": f"{edge}.{theirs}", "display": f"{other}.display",
                   "type": f"{other}.type" if self.rtype is GROUP_TYPE else "'direct'"}
        if leaf.name not in columns:
            raise FilterError(f"'{leaf.name}' of a membership cannot be filtered on", 0)
        return columns[leaf.name]

    # -- value paths ---------------------------------------------------------------------------

    def value_path(self, path: AttrPath, inner: Node) -> str:
        found = self.resolve(path)
        if found is None:
            return "0"
        attr = found.attr
        if attr.type != COMPLEX:
            raise FilterError(f"'{attr.name}' is not a complex attribute", path.position)
        if self._is_membership(attr):
            edge, other = self.alias("m"), self.alias("t")
            mine, theirs = ("group_id", "member_id") if self.rtype is GROUP_TYPE else ("member_id", "group_id")
            condition = self.element_filter(inner, attr, lambda leaf: self._membership_column(leaf, edge, theirs, other))
            return (f"EXISTS (SELECT 1 FROM members AS {edge} JOIN resources AS {other} ON {other}.id = {edge}.{theirs} "
                    f"WHERE {edge}.{mine} = r.id AND {condition})")
        if not attr.multi_valued:
            # Entra's `name[givenName eq "x"]`: the filter tests the single value.
            base = _json_path(found.schema, self.rtype, attr.name)
            return self.element_filter(inner, attr, lambda leaf: f"json_extract(r.doc, '{base}.{leaf.name}')")
        element = self.alias("e")
        array = _json_path(found.schema, self.rtype, attr.name)
        prefilter = self._value_path_prefilter(found.schema, attr, inner)
        condition = self.element_filter(inner, attr, lambda leaf: f"json_extract({element}.value, '$.{leaf.name}')")
        exists = f"EXISTS (SELECT 1 FROM json_each(r.doc, '{array}') AS {element} WHERE {condition})"
        return f"({prefilter} AND {exists})" if prefilter else exists

    def _value_path_prefilter(self, schema: Schema, attr: Attribute, inner: Node) -> str | None:
        """An indexed `value eq` conjunct narrows Entra's `emails[type eq "work"].value eq "x"` first."""
        conjuncts = inner.children if isinstance(inner, And) else (inner,)
        for conjunct in conjuncts:
            if isinstance(conjunct, Compare) and conjunct.op == "eq" and conjunct.value is not None:
                leaf = resolve_relative(attr, conjunct.path)
                lookup = self._value_key_lookup(schema, attr, leaf, conjunct)
                if lookup:
                    return lookup
        return None

    def element_filter(self, node: Node, parent: Attribute, column: Any) -> str:
        """The inner filter of `attr[...]`, over one element whose sub-attributes `column` locates."""
        match node:
            case And(children):
                return "(" + " AND ".join(self.element_filter(c, parent, column) for c in children) + ")"
            case Or(children):
                return "(" + " OR ".join(self.element_filter(c, parent, column) for c in children) + ")"
            case Not(child):
                return f"(NOT {self.element_filter(child, parent, column)})"
            case Compare(path) | Present(path):
                leaf = resolve_relative(parent, path)
                expr = column(leaf)
                if isinstance(node, Compare):
                    check_comparison(leaf, node.op, node.value, path.position)
                if isinstance(node, Present) or node.value is None:
                    present = f"(coalesce({expr}, '') <> '')" if _is_text(leaf) else f"({expr} IS NOT NULL)"
                    return f"(NOT {present})" if isinstance(node, Compare) and node.op == "eq" else present
                return self.scalar(node, leaf, expr, False, False)
            case ValuePath(path):
                raise FilterError("a value filter cannot contain another value filter", path.position)
        raise AssertionError(f"unknown filter node {node!r}")


def compile_filter(rtype: ResourceType, node: Node, unknown_is_false: bool = False) -> Compiled:
    """The WHERE condition (for alias `r`) of a filter on one resource type; raises FilterError."""
    compiler = _Compiler(rtype, unknown_is_false)
    sql = compiler.node(node)
    return Compiled(sql, compiler.params, compiler.index_lookup)


def sort_expression(rtype: ResourceType, path: AttrPath) -> tuple[str, bool]:
    """The ORDER BY expression of sortBy and whether it can be NULL (RFC 7644 §3.4.2.3: a
    multi-valued attribute sorts by its primary value, else its first)."""
    found = resolve(rtype, path)
    attr, sub = found.attr, found.sub
    compiler = _Compiler(rtype)
    column = compiler._column(found.schema, attr, sub)
    if column is not None:
        return column[0], not column[2]
    if compiler._is_membership(attr):
        if (sub or implicit_value(attr)).name != "value":  # type: ignore[union-attr]
            raise FilterError("memberships sort only by 'value'", path.position)
        mine, theirs = ("group_id", "member_id") if rtype is GROUP_TYPE else ("member_id", "group_id")
        return f"(SELECT min({theirs}) FROM members WHERE {mine} = r.id)", True
    if attr.multi_valued:
        leaf = sub or implicit_value(attr)
        if leaf is None:
            raise FilterError(f"cannot sort by complex attribute '{attr.name}'", path.position)
        array = _json_path(found.schema, rtype, attr.name)
        value = f"json_extract(s.value, '$.{leaf.name}')"
        expr = (f"(SELECT {'scim_fold(' + value + ')' if _folds(leaf) else value} FROM json_each(r.doc, '{array}') AS s "
                f"ORDER BY coalesce(json_extract(s.value, '$.primary'), 0) DESC, s.key LIMIT 1)")
        return expr, True
    if attr.type == COMPLEX and sub is None:
        raise FilterError(f"cannot sort by complex attribute '{attr.name}'", path.position)
    names = (attr.name,) if sub is None else (attr.name, sub.name)
    expr = f"json_extract(r.doc, '{_json_path(found.schema, rtype, *names)}')"
    leaf = sub or attr
    return (f"scim_fold({expr})" if _folds(leaf) else expr), True


class SortError(FilterError):
    """sortBy names nothing sortable (reported as invalidValue, not invalidFilter)."""


@dataclass(slots=True)
class Page:
    rows: list[Row]
    total: int | None  # None: not counted (find(..., count=False) and the page did not hold every match)
    keys: list[tuple[Any, ...]]  # each row's sort key, for the next cursor (RFC 9865)


def find(conn: sqlite3.Connection, rtypes: list[ResourceType], node: Node | None, sort_by: AttrPath | None,
         descending: bool, offset: int, limit: int, after: tuple[Any, ...] | None = None, count: bool = True,
         related: Related = NOTHING_RELATED) -> Page:
    """One page of resources of these types matching `node`, with their `related` data, in a
    stable order (ties by id), plus the exact total (unless `count` is False and the page does not
    show it). `after` is the sort key of the previous page's last row (keyset paging)."""
    where, params = _where(rtypes, node)
    key_exprs = _key_expressions(rtypes, sort_by)
    direction = " DESC" if descending else ""
    order = ", ".join(f"{expr}{direction}" for expr in key_exprs)
    page_where, page_params = where, list(params)
    if after is not None:
        marks = ", ".join("?" * len(after))
        page_where += f" AND ({', '.join(key_exprs)}) {'<' if descending else '>'} ({marks})"
        page_params += list(after)
    sql = (f"SELECT {row_columns(related, key_exprs)} FROM resources AS r WHERE {page_where} "
           f"ORDER BY {order} LIMIT ? OFFSET ?")
    if trace.active():
        trace.note("query", sql=sql, params=page_params + [limit, offset])
    records = conn.execute(sql, page_params + [limit, offset]).fetchall()
    if offset == 0 and after is None and len(records) < limit:
        total: int | None = len(records)  # the page holds every match: no second query (Entra's lookups)
    elif not count:
        total = None
    else:
        total = conn.execute(f"SELECT count(*) FROM resources AS r WHERE {where}", params).fetchone()[0]
    rows, keys = rows_and_keys(records)
    return Page(rows, total, keys)


def _where(rtypes: list[ResourceType], node: Node | None) -> tuple[str, list[Any]]:
    """Per type: `r.type = ? AND <filter>`. On /.search an attribute one type lacks is false for
    that type (RFC 7644 §3.4.3); one that no type has is an error."""
    parts: list[str] = []
    params: list[Any] = []
    failures: list[FilterError] = []
    compiled_by_type: list[tuple[ResourceType, Compiled]] = []
    for rtype in rtypes:
        if node is None:
            parts.append("r.type = ?")
            params.append(rtype.name)
            continue
        try:
            compiled_by_type.append((rtype, compile_filter(rtype, node)))
        except FilterError as exc:
            failures.append(exc)
    if node is not None and compiled_by_type and failures:
        # Some type knows every attribute; for the others, unknown attributes are simply false.
        compiled_by_type = [(rtype, compile_filter(rtype, node, unknown_is_false=True)) for rtype in rtypes]
    for rtype, compiled in compiled_by_type:
        if trace.active():
            trace.note("filter", resource_type=rtype.name, tree=to_text(node), sql=compiled.sql, params=compiled.params)
        # `+r.type` keeps the type test off the indexes so an id lookup drives the query.
        parts.append(f"({'+' if compiled.index_lookup else ''}r.type = ? AND {compiled.sql})")
        params += [rtype.name, *compiled.params]
    if not parts:
        raise failures[0]
    return " OR ".join(parts) if len(parts) > 1 else parts[0], params


def _key_expressions(rtypes: list[ResourceType], sort_by: AttrPath | None) -> list[str]:
    """ORDER BY keys: [missing-last flag,] sort value, id. Missing values sort last ascending."""
    if sort_by is None:
        return ["r.id"]
    expressions: list[tuple[ResourceType, str, bool]] = []
    failures: list[FilterError] = []
    for rtype in rtypes:
        try:
            expressions.append((rtype, *sort_expression(rtype, sort_by)))
        except FilterError as exc:
            failures.append(exc)
    if not expressions:
        raise SortError(failures[0].message, failures[0].position)
    if len(rtypes) == 1 and not expressions[0][2]:
        return [expressions[0][1], "r.id"]
    if len(rtypes) == 1:
        value = expressions[0][1]
    else:
        value = "CASE r.type " + " ".join(f"WHEN '{rt.name}' THEN {expr}" for rt, expr, _ in expressions) + " END"
    # Within the missing group every value is NULL: coalesce keeps row-value comparisons non-NULL.
    return [f"(({value}) IS NULL)", f"coalesce(({value}), '')", "r.id"]
