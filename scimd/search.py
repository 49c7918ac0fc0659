"""Query parameters of list and search requests (RFC 7644 §3.4.2, §3.4.3; RFC 9865 §3), read
from a query string or a SearchRequest body into one Search, with the filter parsed once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from scimd import errors
from scimd.filter import AttrPath, FilterError, Node, parse_filter, parse_path
from scimd.schema import SEARCH_REQUEST_URN


@dataclass(frozen=True, slots=True)
class Search:
    filter: Node | None = None
    sort_by: AttrPath | None = None
    descending: bool = False
    start_index: int = 1
    count: int | None = None
    cursor: str | None = None  # "" starts a cursor walk (RFC 9865 §3.1)
    attributes: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()


def from_query(args: Mapping[str, str]) -> Search:
    """From GET parameters; names matched case-insensitively (Okta and SailPoint vary the case)."""
    lowered = {key.lower(): value for key, value in args.items()}
    return _build(lowered.get, _csv)


def from_body(body: Any) -> Search:
    """From a POST /.search SearchRequest (RFC 7644 §3.4.3)."""
    if not isinstance(body, dict):
        raise errors.InvalidSyntax("A SearchRequest must be a JSON object.")
    lowered = {str(key).lower(): value for key, value in body.items()}
    schemas = lowered.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or SEARCH_REQUEST_URN not in schemas):
        raise errors.InvalidSyntax(f"A SearchRequest must list the schema {SEARCH_REQUEST_URN}.")
    return _build(lowered.get, _names)


def _build(get: Any, names: Any) -> Search:
    cursor = get("cursor")
    start = get("startindex")
    if cursor is not None and start is not None:
        raise errors.InvalidValue("Use either cursor or startIndex paging, not both (RFC 9865 §3).")
    if cursor is not None and not isinstance(cursor, str):
        raise errors.InvalidValue("'cursor' must be a string.")
    return Search(
        filter=_filter(get("filter")),
        sort_by=_sort_by(get("sortby")),
        descending=_descending(get("sortorder")),
        start_index=max(1, _integer("startIndex", start, 1)),
        count=None if get("count") is None else max(0, _integer("count", get("count"), 0)),
        cursor=cursor,
        attributes=tuple(names("attributes", get("attributes"))),
        excluded=tuple(names("excludedAttributes", get("excludedattributes"))),
    )


def _filter(text: Any) -> Node | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        raise errors.InvalidFilter("'filter' must be a string.")
    try:
        return parse_filter(text)
    except FilterError as exc:
        raise errors.InvalidFilter(str(exc)) from None


def _sort_by(text: Any) -> AttrPath | None:
    if text is None or text == "":
        return None
    try:
        path = parse_path(str(text))
    except FilterError as exc:
        raise errors.InvalidValue(f"Invalid sortBy: {exc}.") from None
    if path.filter is not None or path.sub is not None or not path.attr.attr:
        raise errors.InvalidValue("sortBy takes an attribute path without a filter.")
    return path.attr


def _descending(text: Any) -> bool:
    if text is None or text == "":
        return False
    order = str(text).lower()
    if order not in ("ascending", "descending"):
        raise errors.InvalidValue("sortOrder is 'ascending' or 'descending'.")
    return order == "descending"


_INTEGER = re.compile(r"-?[0-9]{1,18}")


def _integer(name: str, value: Any, default: int) -> int:
    """RFC 7644 §3.4.2.4 integers; anything else is a 400, never a 500."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise errors.InvalidValue(f"'{name}' must be an integer.")
    text = str(value).strip()
    # ASCII digits only (str.isdigit() admits '²', which int() refuses), and at most 18 of them,
    # JSON numbers included, so the value fits SQLite's 64-bit OFFSET and LIMIT.
    if not _INTEGER.fullmatch(text):
        raise errors.InvalidValue(f"'{name}' must be an integer, got {str(value)[:40]!r}.")
    return int(text)


def _csv(name: str, value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _names(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return _csv(name, value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    raise errors.InvalidValue(f"'{name}' must be a list of attribute names.")
