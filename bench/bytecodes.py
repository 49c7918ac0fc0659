"""Python bytecodes per request, per operation, with the Looking Glass on and off.

A count that does not move with the machine: on the shared VM these benchmarks run on, two
daemons with identical settings differ by up to 7.5% in throughput and the same code's CPU time
per request by up to 1.6x, more than most changes it is to judge (docs/benchmarks.md, "Session
5"). The number of bytecodes the interpreter runs for a request is the same from run to run, so a
change's effect on scimd's own Python work shows exactly, before a throughput run says whether it
mattered. It leaves out what bytecodes do not show: SQLite, orjson, waitress's C parts, and the
cost of each bytecode, which differs by tens of times.

The real app runs in this process (no HTTP), with SCIM_LOOKING_GLASS true and false over one
store; each operation's requests first fill the Looking Glass's ring (so the measured ones evict
events, as on a server), then `--measured` of them are counted with sys.settrace's opcode events.

    python -m bench.bytecodes --data /tmp/scimd-bench-100000/data
    python -m bench.bytecodes --users 2000          (seeds a temporary directory)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterable

import orjson

from bench import ops, procs, report
from bench.inproc import wsgi_environ
from bench.seed import Manifest, existing_or_seeded
from scimd.app import create_app
from scimd.config import load
from scimd.store import Store

# What IdPs send most: reads by id and by userName, a page, a create and a PATCH.
OPERATIONS = ("get_user", "filter_username", "page_100", "post_user", "patch_user")
TOKEN = "bytecodes-token"
RING = 500  # SCIM_LOOKING_GLASS_MAX_EVENTS's default: warm-up requests fill it


def count(data_dir: Path, manifest: Manifest, operations: Iterable[str] = OPERATIONS,
          measured: int = 50) -> dict[str, dict[str, float]]:
    """{operation: {"off": bytecodes per request, "on": ...}}."""
    store = Store(data_dir / "scim.db")
    apps = {mode: create_app(load({"SCIM_DATA_DIR": str(data_dir), "SCIM_API_TOKEN": TOKEN,
                                   "SCIM_LOOKING_GLASS": mode}), store) for mode in ("false", "true")}
    try:
        return {name: {("on" if mode == "true" else "off"): _per_request(app, name, manifest, measured)
                       for mode, app in apps.items()} for name in operations}
    finally:
        store.close()


def _per_request(app: Callable[..., Any], name: str, manifest: Manifest, measured: int) -> float:
    requests = ops.requests_for(name, manifest, "/scim/v2")
    run = f"bc{time.time_ns()}"  # fresh user names and titles: no POST conflicts, no PATCH is a no-op
    environs = [wsgi_environ(requests[i % len(requests)], TOKEN, f"{run}-{i}") for i in range(RING + measured)]
    for environ in environs[:RING]:
        _call(app, environ)
    executed = 0

    def trace(frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        nonlocal executed
        frame.f_trace_opcodes = True
        if event == "opcode":
            executed += 1
        return trace

    sys.settrace(trace)
    try:
        for environ in environs[RING:]:
            _call(app, environ)
    finally:
        sys.settrace(None)
    return executed / measured


def _call(app: Callable[..., Any], environ: dict[str, Any]) -> None:
    statuses: list[str] = []
    result = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        b"".join(result)
    finally:
        result.close()  # as a server does: the Looking Glass records here
    if not statuses[0].startswith("2"):
        raise RuntimeError(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} answered {statuses[0]}")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bytecodes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a seeded data directory (python -m bench --reuse keeps one; counted "
                                       "on a copy); default: seed --users into a temporary one")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--ops", default=",".join(OPERATIONS), help="comma-separated operations")
    parser.add_argument("--measured", type=int, default=50, help="requests counted per operation and mode")
    parser.add_argument("--json", help="also write the counts here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scimd-bytecodes-") as scratch:
        data, manifest = existing_or_seeded(args.data, Path(scratch), args.users)
        if args.data:  # counted on a copy: its POSTs must not grow the seeded directory
            procs.copy_database(data, Path(scratch) / "copy")
            data = Path(scratch) / "copy"
        counts = count(data, manifest, args.ops.split(","), args.measured)
    print(f"Python bytecodes per request, {manifest.users:,} seeded users, {args.measured} requests each:\n")
    print(report.capture_table(counts))
    if args.json:
        Path(args.json).write_text(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
