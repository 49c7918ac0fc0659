"""Resources in and out: schema-driven validation and normalisation of client JSON, rendering of
stored rows as SCIM JSON, and `attributes` / `excludedAttributes` projection (RFC 7644 §3.9).

Input attribute names are matched case-insensitively and stored in the schema's canonical
case; the leniencies real clients need are applied here, in one place, each noted for the
Looking Glass (see ../shared/docs/idp-dialects.md).
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from scimd import errors, trace
from scimd.schema import (
    BINARY, BOOLEAN, COMMON, COMPLEX, DATETIME, DECIMAL, ENTERPRISE_URN, GROUP_TYPE, INTEGER, RESOURCE_TYPES, USER_TYPE,
    Attribute, ResourceType, GROUP_URN, USER_URN, Schema, parse_datetime, split_urn,
)
from scimd.store import MemberRef, Row

# Schema URNs older clients put in `schemas` or use as keys (OneLogin templates, SCIM 1.1).
LEGACY_URNS: dict[str, str] = {
    "urn:scim:schemas:extension:enterprise:1.0": ENTERPRISE_URN,
    "urn:scim:schemas:extension:enterprise:2.0": ENTERPRISE_URN,
}
_TRUE_STRINGS = {"true": True, "false": False}
_CORE_URNS = frozenset({USER_URN, GROUP_URN, COMMON.id})


@dataclass(slots=True)
class Draft:
    """A validated resource body: the document to store, plus what is stored elsewhere."""

    doc: dict[str, Any]
    password: str | None = None
    members: list[dict[str, Any]] | None = None


# -- values --------------------------------------------------------------------------------


def normalize_value(attr: Attribute, value: Any, where: str) -> Any:
    """Check and normalise one attribute value; None means "unset" (RFC 7643 §2.5: null and [] are unassigned)."""
    if value is None:
        return None
    if attr.multi_valued:
        return _normalize_multi(attr, value, where)
    return normalize_single(attr, value, where)


def normalize_single(attr: Attribute, value: Any, where: str) -> Any:
    if value is None:
        return None
    if attr.type == COMPLEX:
        return _normalize_complex(attr, value, where)
    if attr.type == BOOLEAN:
        return _boolean(value, where)
    if attr.type in (INTEGER, DECIMAL):
        return _number(attr, value, where)
    if not isinstance(value, str):
        raise errors.InvalidValue(f"'{where}' must be a string, got {_json_type(value)}.")
    if "\x00" in value:
        # JSON allows \u0000, but a NUL cuts the value short in the C-string tools downstream
        # (LDAP, shells, the sqlite3 CLI), so "admin\u0000x" could pass for "admin" there.
        raise errors.InvalidValue(f"'{where}' must not contain the NUL character (U+0000).")
    if value == "":
        # Entra's null-update test and OneLogin templates send "" for "no value" (E16, OL1).
        return None
    if attr.type == DATETIME:
        try:
            parse_datetime(value)
        except ValueError:
            raise errors.InvalidValue(f"'{where}' must be an xsd:dateTime, got {value!r}.") from None
    if attr.type == BINARY:
        _check_base64(value, where)
    return value


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_STRINGS:
        # Entra sends "True"/"False" (idp-dialects E6, E9).
        coerced = _TRUE_STRINGS[value.strip().lower()]
        trace.note("leniency", text=f"coerced {value!r} to {str(coerced).lower()} for '{where}'")
        return coerced
    raise errors.InvalidValue(f"'{where}' must be a boolean, got {_json_type(value)}.")


def _number(attr: Attribute, value: Any, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.InvalidValue(f"'{where}' must be a number, got {_json_type(value)}.")
    if attr.type == INTEGER and not float(value).is_integer():
        raise errors.InvalidValue(f"'{where}' must be an integer.")
    return int(value) if attr.type == INTEGER else value


def _check_base64(value: str, where: str) -> None:
    try:
        base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise errors.InvalidValue(f"'{where}' must be base64.") from None


def _normalize_complex(attr: Attribute, value: Any, where: str) -> dict[str, Any] | None:
    value = _complex_shorthand(attr, value, where)
    if not isinstance(value, dict):
        raise errors.InvalidValue(f"'{where}' must be an object, got {_json_type(value)}.")
    out: dict[str, Any] = {}
    for key, sub_value in value.items():
        sub = attr.sub(key)
        if sub is None or sub.read_only:
            # `$ref: null`, `display` on members, manager.displayName: not ours to store.
            continue
        normalized = normalize_single(sub, sub_value, f"{where}.{sub.name}")
        if normalized is not None:
            out[sub.name] = normalized
    return out or None


def _complex_shorthand(attr: Attribute, value: Any, where: str) -> Any:
    """Entra sends a manager as a plain id string or as a one-element array (E15)."""
    if isinstance(value, list) and not attr.multi_valued and len(value) == 1:
        trace.note("leniency", text=f"took the single element of an array for '{where}'")
        value = value[0]
    if isinstance(value, (str, int)) and not isinstance(value, bool) and attr.sub("value") is not None:
        if value == "":
            return {}
        trace.note("leniency", text=f"read a bare value for '{where}' as {{\"value\": ...}}")
        return {"value": str(value)}
    return value


def _normalize_multi(attr: Attribute, value: Any, where: str) -> list[Any] | None:
    if isinstance(value, dict) or (isinstance(value, str) and attr.type == COMPLEX):
        value = [value]
    if not isinstance(value, list):
        raise errors.InvalidValue(f"'{where}' must be an array, got {_json_type(value)}.")
    elements = [normalize_single(attr, element, where) for element in value]
    kept = [element for element in elements if element not in (None, {})]
    return single_primary(kept) or None


def single_primary(elements: list[Any]) -> list[Any]:
    """At most one element may be primary (RFC 7643 §2.4): the first one marked keeps it."""
    seen = False
    for element in elements:
        if isinstance(element, dict) and element.get("primary") is True:
            if seen:
                element["primary"] = False
            seen = True
    return elements


def _json_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


# -- resources in ----------------------------------------------------------------------------


# Longer keys are resolved each time: a cache of client-chosen strings must stay small.
_CACHED_KEY_LENGTH = 200


def resolve_key(rtype: ResourceType, key: str) -> tuple[Schema, Attribute | None, str | None] | None:
    """Map a body key to (schema, attribute, sub-attribute name), any case, URN-qualified or not.

    A key that is a whole extension URN maps to (extension, None, None).
    """
    if len(key) > _CACHED_KEY_LENGTH:
        return _resolve_key(rtype, key)
    return _resolve_key_cached(rtype.name, key)


@functools.lru_cache(maxsize=1024)  # by the type's name: hashing a ResourceType hashes all its schemas
def _resolve_key_cached(rtype_name: str, key: str) -> tuple[Schema, Attribute | None, str | None] | None:
    """Cached: an IdP sends the same dozen keys in every body, and resolving one (URN split,
    schema and attribute look-ups) was ~10% of a POST's Python work."""
    return _resolve_key(RESOURCE_TYPES[rtype_name.lower()], key)


def _resolve_key(rtype: ResourceType, key: str) -> tuple[Schema, Attribute | None, str | None] | None:
    urn, rest = split_urn(key)
    if urn is not None:
        urn = LEGACY_URNS.get(urn.lower(), urn)
        schema = rtype.schema_for_urn(urn)
        if schema is None:
            return None
        if rest == "":
            return (schema, None, None) if schema is not rtype.core else None
    else:
        schema, rest = rtype.core, key
    name, _, sub = rest.partition(".")
    found = rtype.resolve(schema.id if schema is not rtype.core else None, name)
    if found is None:
        return None
    return found[0], found[1], sub or None


def parse_resource(rtype: ResourceType, body: Any) -> Draft:
    """Validate a POST/PUT body into a Draft (RFC 7643 §2, RFC 7644 §3.3, §3.5.1)."""
    if not isinstance(body, dict):
        raise errors.InvalidSyntax("The request body must be a JSON object.")
    draft = Draft({})
    for key, value in body.items():
        if not isinstance(key, str) or key.lower() == "schemas":
            continue
        if key in LEGACY_URNS or key.lower() in LEGACY_URNS:
            key = LEGACY_URNS[key.lower()]
        target = resolve_key(rtype, key)
        if target is None:
            trace.note("leniency", text=f"ignored unknown attribute '{key}'")
            continue
        schema, attr, sub = target
        if attr is None:
            _merge_extension(draft.doc, schema, value)
        else:
            _take(rtype, draft, schema, attr, sub, value)
    check_required(rtype, draft.doc)
    return draft


def _merge_extension(doc: dict[str, Any], schema: Schema, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise errors.InvalidValue(f"'{schema.id}' must be an object.")
    for key, sub_value in value.items():
        attr = schema.attribute(key)
        if attr is None or attr.read_only:
            trace.note("leniency", text=f"ignored unknown attribute '{key}' in {schema.id}")
            continue
        set_attribute(doc, schema, attr, normalize_value(attr, sub_value, attr.name))


def _take(rtype: ResourceType, draft: Draft, schema: Schema, attr: Attribute, sub: str | None, value: Any) -> None:
    if attr.name == "password" and schema is rtype.core:
        draft.password = normalize_single(attr, value, "password")
        return
    if attr.read_only or (schema is COMMON and attr.name != "externalId"):
        # id, meta, groups sent back by Okta's read-modify-write PUT (O15): ignored, not an error.
        trace.note("leniency", text=f"ignored readOnly attribute '{attr.name}'")
        return
    if rtype is GROUP_TYPE and attr.name == "members":
        draft.members = parse_members(value)
        return
    if sub is not None:
        sub_attr = attr.sub(sub)
        if sub_attr is None or attr.multi_valued:
            trace.note("leniency", text=f"ignored unknown attribute '{attr.name}.{sub}'")
            return
        holder = dict(get_attribute(draft.doc, schema, attr) or {})
        holder[sub_attr.name] = normalize_single(sub_attr, value, f"{attr.name}.{sub_attr.name}")
        set_attribute(draft.doc, schema, attr, {k: v for k, v in holder.items() if v is not None} or None)
        return
    set_attribute(draft.doc, schema, attr, normalize_value(attr, value, attr.name))


def parse_members(value: Any) -> list[dict[str, Any]]:
    """Group members as [{"value": id, "type"?: ...}]: `$ref`, `display` ignored, `type` optional (O22)."""
    if value is None:
        return []
    if isinstance(value, (dict, str)):
        value = [value]
    if not isinstance(value, list):
        raise errors.InvalidValue("'members' must be an array.")
    members = []
    for element in value:
        if isinstance(element, str):
            element = {"value": element}
        if not isinstance(element, dict):
            raise errors.InvalidValue("Each member must be an object with a 'value'.")
        lowered = {str(k).lower(): v for k, v in element.items()}
        member_id = lowered.get("value")
        if not isinstance(member_id, str) or not member_id:
            raise errors.InvalidValue("Each member needs a 'value' holding the member's id.")
        members.append({"value": member_id, "type": lowered.get("type")})
    return members


def check_required(rtype: ResourceType, doc: dict[str, Any]) -> None:
    for attr in rtype.core.attributes:
        if attr.required and doc.get(attr.name) in (None, "", []):
            raise errors.InvalidValue(f"'{attr.name}' is required.")


def _holder(doc: dict[str, Any], schema: Schema, create: bool = False) -> dict[str, Any]:
    """Core and common attributes sit at the top level; extension attributes under their URN."""
    if schema.id in _CORE_URNS:
        return doc
    return doc.setdefault(schema.id, {}) if create else doc.get(schema.id, {})


def get_attribute(doc: dict[str, Any], schema: Schema, attr: Attribute) -> Any:
    return _holder(doc, schema).get(attr.name)


def set_attribute(doc: dict[str, Any], schema: Schema, attr: Attribute, value: Any) -> None:
    """Set (or, with None, remove) one top-level attribute, dropping an extension left empty."""
    holder = _holder(doc, schema, create=value is not None)
    if value is None:
        holder.pop(attr.name, None)
    else:
        holder[attr.name] = value
    if holder is not doc and not holder:
        doc.pop(schema.id, None)


# -- resources out ---------------------------------------------------------------------------


def location(base_url: str, rtype_name: str, rid: str) -> str:
    return f"{base_url}/scim/v2/{'Groups' if rtype_name == 'Group' else 'Users'}/{rid}"


def render(rtype: ResourceType, row: Row, base_url: str, edges: list[MemberRef] | None) -> dict[str, Any]:
    """The full SCIM representation of a stored row (before projection)."""
    doc = row.doc
    schemas = [rtype.core.id] + [ext.id for ext in rtype.extensions if ext.id in doc]
    out: dict[str, Any] = {"schemas": schemas, "id": row.id}
    out.update(doc)
    if edges is not None:
        out["members" if rtype is GROUP_TYPE else "groups"] = render_edges(rtype, edges, base_url)
    out["meta"] = {
        "resourceType": rtype.name,
        "created": row.created,
        "lastModified": row.last_modified,
        "location": location(base_url, rtype.name, row.id),
        "version": row.etag,
    }
    return out


def render_edges(rtype: ResourceType, edges: Iterable[MemberRef], base_url: str) -> list[dict[str, Any]]:
    if rtype is GROUP_TYPE:
        return [{"value": e.id, "$ref": location(base_url, e.type, e.id), "type": e.type, "display": e.display}
                for e in edges]
    return [{"value": e.id, "$ref": location(base_url, "Group", e.id), "display": e.display, "type": "direct"}
            for e in edges]


@dataclass(frozen=True, slots=True)
class Projection:
    """`attributes` / `excludedAttributes` resolved against the schema once per request (RFC 7644 §3.9)."""

    include: frozenset[tuple[str, str, str | None]] | None  # (schema id, attribute, sub) ; None = default set
    exclude: frozenset[tuple[str, str, str | None]]


def parse_projection(rtype: ResourceType, attributes: Iterable[str], excluded: Iterable[str]) -> Projection:
    return _parse_projection(rtype.name, tuple(attributes), tuple(excluded))


@functools.lru_cache(maxsize=256)
def _parse_projection(rtype_name: str, attributes: tuple[str, ...], excluded: tuple[str, ...]) -> Projection:
    """Cached: clients repeat the same few lists (none at all, or Entra's `excludedAttributes=members`)."""
    rtype = GROUP_TYPE if rtype_name == GROUP_TYPE.name else USER_TYPE
    include = _projection_keys(rtype, attributes)
    exclude = _projection_keys(rtype, excluded)
    return Projection(frozenset(include) if include else None, frozenset(exclude))


def _projection_keys(rtype: ResourceType, names: Iterable[str]) -> set[tuple[str, str, str | None]]:
    keys: set[tuple[str, str, str | None]] = set()
    for name in names:
        target = resolve_key(rtype, name.strip())
        if target is None:
            # Unknown names are ignored, not an error: SailPoint asks for attributes from its own schema (S4).
            continue
        schema, attr, sub = target
        if attr is None:
            keys.update((schema.id, a.name, None) for a in schema.attributes)
            continue
        sub_attr = attr.sub(sub) if sub else None
        keys.add((_holder_id(rtype, schema), attr.name, sub_attr.name if sub_attr else None))
    return keys


def _holder_id(rtype: ResourceType, schema: Schema) -> str:
    return rtype.core.id if schema is COMMON else schema.id


def project(rtype: ResourceType, resource: dict[str, Any], projection: Projection) -> dict[str, Any]:
    """Apply the projection; `returned: always` attributes (id, schemas) are never removed.

    `resource` is a fresh rendering (resource.render), which the result may be.
    """
    plan = _plan(rtype, projection)
    if plan.keeps_everything and plan.never_returned.isdisjoint(resource):
        # The default projection of a stored resource, the common case: a stored document holds
        # no null, no empty extension and no attribute outside its schemas (normalize() and the
        # PATCH engine see to it), so the rendering is its own projection, without rebuilding it
        # key by key (a fifth of a GET's bytecodes). A write-only attribute is never stored in the
        # document (password: the secret column); the disjointness check keeps it out regardless.
        return resource
    out: dict[str, Any] = {"schemas": resource["schemas"], "id": resource["id"]}
    for schema_id, kept_here in plan.holders:
        holder = resource if schema_id is None else resource.get(schema_id)
        if not isinstance(holder, dict):
            continue
        kept: dict[str, Any] = {}
        for name, value in holder.items():
            subs = kept_here.get(name)
            if subs is None:
                continue
            value = value if subs is _ALL else _trim(value, subs)
            if value is not None:
                kept[name] = value
        if schema_id is None:
            out.update(kept)
        elif kept:
            out[schema_id] = kept
    return out


def keeps(rtype: ResourceType, projection: Projection, schema_id: str, name: str) -> bool:
    """Would this top-level attribute appear at all? (Lets the caller skip loading members.)"""
    holder = None if schema_id in _CORE_URNS else schema_id
    return any(holder == where and name in kept for where, kept in _plan(rtype, projection).holders)


_ALL = "all"


class _Plan(NamedTuple):
    """What survives of each top-level attribute, per (resource type, projection): computed once
    for the few projections clients use, instead of walking every attribute of every schema per
    resource."""

    # Per holder (None: the resource itself, for the core schema and the common attributes; else
    # an extension's URN): attribute name -> _ALL or the set of sub-attributes kept.
    holders: tuple[tuple[str | None, dict[str, str | set[str]]], ...]
    # Every attribute kept whole, but for the top-level `never_returned` ones: nothing to remove
    # from a resource that does not hold those.
    keeps_everything: bool
    never_returned: frozenset[str]


_plans: dict[tuple[str, Projection], _Plan] = {}
_MAX_PLANS = 1024


def _plan(rtype: ResourceType, projection: Projection) -> _Plan:
    key = (rtype.name, projection)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= _MAX_PLANS:  # clients could send endless distinct attribute lists
            _plans.clear()
        plan = _plans[key] = _build_plan(rtype, projection)
    return plan


def _build_plan(rtype: ResourceType, projection: Projection) -> _Plan:
    holders: list[tuple[str | None, dict[str, str | set[str]]]] = []
    never_returned: set[str] = set()
    keeps_everything = True
    for schemas, holder in (((rtype.core, COMMON), None), *(((ext,), ext.id) for ext in rtype.extensions)):
        kept: dict[str, str | set[str]] = {}
        for schema in schemas:
            for attr in schema.attributes:
                if attr.name in ("id", "schemas"):
                    continue
                subs = _kept_subs(_holder_id(rtype, schema), attr, projection)
                if subs is not None:
                    kept[attr.name] = subs
                if attr.returned == "never" and holder is None:
                    never_returned.add(attr.name)
                elif subs is not _ALL:  # trimmed or dropped (a never-returned one inside an extension too)
                    keeps_everything = False
        holders.append((holder, kept))
    return _Plan(tuple(holders), keeps_everything, frozenset(never_returned))


def _kept_subs(schema_id: str, attr: Attribute, projection: Projection) -> str | set[str] | None:
    if attr.returned == "always":
        return _ALL
    if attr.returned == "never":
        return None
    return _selected_subs(schema_id, attr, projection)


def _trim(value: Any, subs: set[str]) -> Any:
    """Only the selected sub-attributes of a complex value (or of each element of a list)."""
    if isinstance(value, list):
        trimmed = [{k: v for k, v in element.items() if k in subs} for element in value if isinstance(element, dict)]
        return [element for element in trimmed if element] or None
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k in subs} or None
    return value


def _selected_subs(schema_id: str, attr: Attribute, projection: Projection) -> set[str] | str | None:
    """Which sub-attributes survive: _ALL, a set of names, or None for the whole attribute dropped."""
    if projection.include is not None:
        picked = {sub for s, a, sub in projection.include if s == schema_id and a == attr.name}
        if not picked:
            return _ALL if attr.returned == "always" else None
        if None in picked or not attr.sub_attributes:
            return _ALL
        return {sub for sub in picked if sub} | {s.name for s in attr.sub_attributes if s.returned == "always"}
    if attr.returned == "request":
        return None
    dropped = {sub for s, a, sub in projection.exclude if s == schema_id and a == attr.name}
    if not dropped:
        return _ALL
    if None in dropped:
        return None
    return {s.name for s in attr.sub_attributes if s.name not in dropped}
