"""Bulk (RFC 7644 §3.7): many operations in one request, one database transaction (one fsync)
and one savepoint per operation, each with exactly the semantics of its single-resource
endpoint because it runs the same Directory code.

`bulkId:<id>` references anywhere in an operation's data or path are resolved, operations are
ordered so a reference is created before it is used (forward references), and operations in a
reference cycle fail with 409 instead of hanging (RFC 7644 §3.7.1).
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from scimd import errors, trace
from scimd.config import Config
from scimd.directory import Directory, Outcome, Precondition
from scimd.schema import BULK_REQUEST_URN, BULK_RESPONSE_URN, GROUP_TYPE, USER_TYPE, ResourceType

_BULK_ID = re.compile(r"bulkId:([^\s\"/]+)")
_PATH = re.compile(r"^/?(Users|Groups)(?:/([^/]+))?/?$", re.IGNORECASE)
_TYPES = {"users": USER_TYPE, "groups": GROUP_TYPE}
_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(slots=True)
class BulkOp:
    index: int
    method: str
    path: str
    bulk_id: str | None
    version: str | None
    data: Any
    needs: set[str] = field(default_factory=set)  # bulkIds this operation references
    in_cycle: bool = False


def run_bulk(directory: Directory, config: Config, body: Any) -> dict[str, Any]:
    fail_on_errors, ops = _parse_request(body, config)
    created: dict[str, str] = {}  # bulkId -> new resource id
    failed: set[str] = set()
    results: list[dict[str, Any]] = []
    error_count = 0
    with directory.store.write() as tx:
        for op in _ordered(ops):
            if fail_on_errors is not None and error_count >= fail_on_errors:
                break
            result = _run_one(directory, tx, op, created, failed)
            results.append(result)
            if int(result["status"]) >= 400:
                error_count += 1
                if op.bulk_id:
                    failed.add(op.bulk_id)
            trace.note("bulk", method=op.method, bulkId=op.bulk_id, status=result["status"],
                       resolved={ref: created.get(ref) for ref in sorted(op.needs)})
    return {"schemas": [BULK_RESPONSE_URN], "Operations": results}


def _parse_request(body: Any, config: Config) -> tuple[int | None, list[BulkOp]]:
    if not isinstance(body, dict):
        raise errors.InvalidSyntax("A BulkRequest must be a JSON object.")
    lowered = {str(k).lower(): v for k, v in body.items()}
    schemas = lowered.get("schemas")
    if not isinstance(schemas, list) or BULK_REQUEST_URN not in schemas:
        raise errors.InvalidSyntax(f"A BulkRequest must list the schema {BULK_REQUEST_URN}.")
    operations = lowered.get("operations")
    if not isinstance(operations, list):
        raise errors.InvalidSyntax("A BulkRequest needs an 'Operations' array.")
    if len(operations) > config.bulk_max_operations:
        raise errors.PayloadTooLarge(
            f"The request has {len(operations)} operations; the maximum is {config.bulk_max_operations} (RFC 7644 §3.7.4).")
    fail_on_errors = lowered.get("failonerrors")
    if fail_on_errors is not None and (isinstance(fail_on_errors, bool) or not isinstance(fail_on_errors, int)
                                       or fail_on_errors < 1):
        raise errors.InvalidValue("'failOnErrors' must be a positive integer.")
    return fail_on_errors, [_parse_op(index, op) for index, op in enumerate(operations)]


def _parse_op(index: int, raw: Any) -> BulkOp:
    if not isinstance(raw, dict):
        raise errors.InvalidSyntax(f"Operation {index} must be an object.")
    lowered = {str(k).lower(): v for k, v in raw.items()}
    method, path, bulk_id, version = (lowered.get(k) for k in ("method", "path", "bulkid", "version"))
    op = BulkOp(index, str(method or "").upper(), path if isinstance(path, str) else "",
                bulk_id if isinstance(bulk_id, str) else None, version if isinstance(version, str) else None,
                lowered.get("data"))
    op.needs = set(_BULK_ID.findall(op.path)) | _data_references(op.data)
    return op


def _data_references(data: Any) -> set[str]:
    # Most operations reference nothing: one search of their JSON (where every string appears
    # unchanged, as `bulkId:` needs no escaping) instead of a walk of every value.
    return _references(data) if b"bulkId:" in orjson.dumps(data) else set()


def _references(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(_BULK_ID.findall(value))
    if isinstance(value, dict):
        return set().union(*(_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    return set()


def _ordered(ops: list[BulkOp]) -> list[BulkOp]:
    """Dependencies first, otherwise request order (Kahn's algorithm, O(operations + references));
    operations left waiting on each other form a cycle: they come last and fail."""
    creators = {op.bulk_id: op.index for op in ops if op.bulk_id and op.method == "POST"}
    waiting = {op.index: {creators[ref] for ref in op.needs if ref in creators} - {op.index} for op in ops}
    dependants: dict[int, list[int]] = {}
    for index, needed in waiting.items():
        for dependency in needed:
            dependants.setdefault(dependency, []).append(index)
    ready = [index for index, needed in waiting.items() if not needed]
    heapq.heapify(ready)
    order: list[BulkOp] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(ops[index])
        for dependant in dependants.get(index, ()):
            waiting[dependant].discard(index)
            if not waiting[dependant]:
                heapq.heappush(ready, dependant)
    for op in ops:
        if waiting[op.index]:  # stuck: each waits on another, so each reports 409 (RFC 7644 §3.7.1)
            op.in_cycle = True
            order.append(op)
    return order


def _run_one(directory: Directory, tx: Any, op: BulkOp, created: dict[str, str], failed: set[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"method": op.method or None}
    if op.bulk_id:
        result["bulkId"] = op.bulk_id
    try:
        data, path = _resolve(op, created, failed)
        rtype, rid = _target(op, path)
        with tx.savepoint():
            outcome = _dispatch(directory, tx, op, rtype, rid, data)
    except errors.ScimError as exc:
        result.update(status=str(exc.status), response=exc.to_json())
        return result
    if outcome is not None:
        result.update(location=outcome.location, version=outcome.etag)
    result["status"] = {"POST": "201", "DELETE": "204"}.get(op.method, "200")
    if op.method == "POST" and op.bulk_id and outcome is not None:
        created[op.bulk_id] = outcome.location.rsplit("/", 1)[1]
    return {k: v for k, v in result.items() if v is not None}


def _resolve(op: BulkOp, created: dict[str, str], failed: set[str]) -> tuple[Any, str]:
    if op.in_cycle:
        raise _conflict(f"The bulkId references of this operation form a cycle ({', '.join(sorted(op.needs))}); "
                        "it cannot be ordered (RFC 7644 §3.7.1).")
    if not op.needs:  # most operations: nothing to resolve, and the data need not be copied
        return op.data, op.path
    for ref in sorted(op.needs):
        if ref in failed:
            raise errors.InvalidValue(f"This operation references bulkId '{ref}', whose operation failed.")
        if ref not in created:
            raise _conflict(f"bulkId '{ref}' cannot be resolved: no operation in this request creates it.")
    substitute = lambda text: _BULK_ID.sub(lambda m: created[m.group(1)], text)  # noqa: E731
    return _replace_refs(op.data, substitute), substitute(op.path)


def _conflict(detail: str) -> errors.ScimError:
    error = errors.ScimError(detail)
    error.status = 409
    return error


def _replace_refs(value: Any, substitute: Any) -> Any:
    if isinstance(value, str):
        return substitute(value)
    if isinstance(value, dict):
        return {k: _replace_refs(v, substitute) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_refs(v, substitute) for v in value]
    return value


def _target(op: BulkOp, path: str) -> tuple[ResourceType, str | None]:
    if op.method not in _METHODS:
        raise errors.InvalidSyntax(f"Unsupported bulk method {op.method or '(none)'!r}.")
    match = _PATH.match(path)
    if not match:
        raise errors.InvalidPath(f"Bulk path {path!r} is not /Users, /Groups or one of their resources.")
    rtype, rid = _TYPES[match.group(1).lower()], match.group(2)
    if (op.method == "POST") == (rid is not None):
        raise errors.InvalidPath(f"{op.method} needs {'a collection' if op.method == 'POST' else 'a resource'} path.")
    if op.method == "POST" and not op.bulk_id:
        raise errors.InvalidValue("A bulk POST needs a 'bulkId' (RFC 7644 §3.7).")
    return rtype, rid


def _dispatch(directory: Directory, tx: Any, op: BulkOp, rtype: ResourceType, rid: str | None,
              data: Any) -> Outcome | None:
    # No projection: a bulk result carries location and version, not the resource, so nothing is rendered.
    precondition = _version(op.version)
    if op.method == "POST":
        return directory.create(rtype, data, None, tx)
    assert rid is not None
    if op.method == "PUT":
        return directory.replace(rtype, rid, data, precondition, None, tx)
    if op.method == "PATCH":
        return directory.patch(rtype, rid, data, precondition, None, tx)
    directory.delete(rtype, rid, precondition, tx)
    return None


def _version(version: str | None) -> Precondition | None:
    """An operation's `version` acts as If-Match (RFC 7644 §3.7)."""
    if version is None:
        return None
    if version.strip() == "*":
        return Precondition(any=True)
    return Precondition(frozenset({version.strip().removeprefix("W/").strip('"')}))
