"""The floor: what the ceiling leaves to an app that does the least a SCIM GET must do.

`GET /Users/{id}` must at least read the user's row from the database and spend some Python
CPU on the request (authorise it, render and log the answer). The floor app does exactly that
and nothing else: one row read through scimd's own store (the statement scimd's GET makes,
without the related columns) on a per-thread connection, then a calibrated busy loop of
`--cpu-us` microseconds of pure Python, then a body of the size scimd answers with. It is
served by scimd.server.build_server with the same threads as the ceiling, and both are measured
in interleaved rounds, so floor/ceiling is the best scimd/ceiling any code doing that much work
could reach on this machine and this HTTP stack (docs/benchmarks.md, "What the misses need").

    python -m bench.floor --data /tmp/scimd-bench-100000/data --cpu-us 0,50,90,150
    python -m bench.floor serve --port 8082 --data DIR --cpu-us 90 --size 1343   (one server)
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from bench import load, ops, procs
from bench.ceiling import SHAPE_PATH
from bench.load import Request
from bench.seed import existing_or_seeded
from scimd.config import Config
from scimd.schema import USER_TYPE
from scimd.server import build_server
from scimd.store import Store

GET_BODY_BYTES = 1343  # what scimd answers to GET /Users/{id} for a seeded user (bench/results)


def loop_rate() -> float:
    """Iterations of `for _ in range(n): pass` per microsecond of this thread's CPU time."""
    n = 2_000_000
    began = time.thread_time()
    for _ in range(n):
        pass
    return n / ((time.thread_time() - began) * 1e6)


class Floor:
    def __init__(self, store: Store, cpu_us: float, size: int) -> None:
        self.store = store
        self.spins = int(cpu_us * loop_rate())
        self.body = b"x" * size

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        row = self.store.view().get(USER_TYPE, environ.get("PATH_INFO", "").rpartition("/")[2])
        for _ in range(self.spins):
            pass
        status = "200 OK" if row is not None else "404 Not Found"
        start_response(status, [("Content-Type", "application/scim+json; charset=utf-8"),
                                ("Content-Length", str(len(self.body)))])
        return [self.body]


def serve(args: argparse.Namespace) -> int:
    store = Store(Path(args.data) / "scim.db")
    server = build_server(Floor(store, args.cpu_us, args.size), Config(host="127.0.0.1", port=args.port,
                                                                          threads=args.threads))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


def compare(args: argparse.Namespace) -> int:
    """For each --cpu-us: the floor against the ceiling, rounds interleaved; a Markdown table."""
    with tempfile.TemporaryDirectory(prefix="scimd-floor-") as scratch:
        data, manifest = existing_or_seeded(args.data, Path(scratch), args.users)
        logs = Path(scratch)
        requests = ops.requests_for("get_user", manifest, "/scim/v2")
        ceiling = procs.ceiling(logs, args.threads).start()
        try:
            load.call(ceiling.base, "", Request("POST", SHAPE_PATH,
                                                orjson.dumps({"status": 200, "size": GET_BODY_BYTES})))
            rows = [_measure(ceiling, data, logs, requests, float(cpu), args) for cpu in args.cpu_us.split(",")]
        finally:
            ceiling.stop()
    print(f"## The floor against the ceiling, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC\n\n"
          f"`python -m bench.floor {' '.join(sys.argv[1:])}`: GET /Users/{{id}} at {args.connections} connections, "
          f"{args.threads} threads, {args.rounds} interleaved rounds of {args.duration:g} s (medians), "
          f"{manifest.users:,} seeded users.\n")
    print("| Python CPU per request (µs) | floor req/s | ceiling req/s | floor/ceiling |\n|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['cpu_us']:g} | {row['floor']:,.0f} | {row['ceiling']:,.0f} | {row['ratio']:.2f} |")
    if args.json:
        Path(args.json).write_text(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    return 0 if all(row["errors"] == 0 for row in rows) else 1


def _measure(ceiling: procs.Server, data: Path, logs: Path, requests: list[Request], cpu_us: float,
             args: argparse.Namespace) -> dict[str, Any]:
    port = procs.free_port()
    floor = procs.Server(f"floor-{cpu_us:g}", ["-m", "bench.floor", "serve", "--port", str(port), "--data", str(data),
                                                "--cpu-us", str(cpu_us), "--threads", str(args.threads)],
                         logs, port=port).start()
    try:
        floor_rps, ceiling_rps, errors = [], [], 0
        for _ in range(args.rounds):
            for server, into in ((floor, floor_rps), (ceiling, ceiling_rps)):
                result = load.run(server.base, secrets.token_hex(4), requests, args.connections, args.duration)
                into.append(result.rps)
                errors += result.errors
    finally:
        floor.stop()
    f, c = statistics.median(floor_rps), statistics.median(ceiling_rps)
    return {"cpu_us": cpu_us, "floor": f, "ceiling": c, "ratio": f / c if c else 0.0, "errors": errors,
            "floor_runs": floor_rps, "ceiling_runs": ceiling_rps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a seeded data directory (python -m bench --reuse keeps one); "
                                       "default: seed --users into a temporary one")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--cpu-us", default="0,50,90,150", help="comma-separated microseconds of Python per request")
    parser.add_argument("--threads", type=int, default=Config.threads)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=2.5, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved floor/ceiling rounds; medians kept")
    parser.add_argument("--json", help="also write the rows here")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        serve_parser = argparse.ArgumentParser(prog="python -m bench.floor serve")
        serve_parser.add_argument("--port", type=int, required=True)
        serve_parser.add_argument("--data", required=True)
        serve_parser.add_argument("--cpu-us", type=float, default=0.0)
        serve_parser.add_argument("--size", type=int, default=GET_BODY_BYTES)
        serve_parser.add_argument("--threads", type=int, default=Config.threads)
        return serve(serve_parser.parse_args(argv[1:]))
    return compare(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
