"""`python -m bench`: seed, start scimd, its ceiling and its peer, drive load, write the report.

Every operation is measured on scimd, then at once on the ceiling (same HTTP server, no work,
same body size) and on the peer, at each connection count, so the three numbers of a row
share the machine's state of that moment and their ratios survive a busy machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from bench import inproc, instructions, load, ops, procs, report
from bench.ceiling import SHAPE_PATH
from bench.load import Request
from bench.seed import Manifest, seed
from scimd.config import Config

RESULTS = Path(__file__).resolve().parent / "results"
SLOW_SECONDS = 0.25  # a peer request slower than this is measured in bursts, not timed runs
BURST = 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=None, help="users to seed (default 100,000; 2,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="CI size: 2,000 users, 1 s runs, 16 connections, no warm-up")
    parser.add_argument("--threads", type=int, default=Config.threads,
                        help=f"SCIM_THREADS, and the same for ceiling and peer (default {Config.threads}, scimd's)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement, split in 2 interleaved rounds (default 6; 1 with --quick)")
    parser.add_argument("--connections", default=None, help="comma-separated (default 1,16,64; 1,16 with --quick)")
    parser.add_argument("--peer-users", type=int, default=None, help="users seeded into the peer (default min(users, 100,000))")
    parser.add_argument("--no-peer", action="store_true", help="skip scim2-server")
    parser.add_argument("--no-load", action="store_true",
                        help="seed, start-up, RSS, database size and one-connection latencies only")
    parser.add_argument("--ops", default=None, help="comma-separated subset of operations")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the data and logs go (default: /tmp)")
    parser.add_argument("--reuse", action="store_true", help="reuse a seeded work dir of the same size")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    parser.add_argument("--name", default=None, help="results file name without extension (default: the date)")
    args = parser.parse_args(argv)
    args.users = args.users or (2_000 if args.quick else 100_000)
    args.duration = args.duration or (1.0 if args.quick else 6.0)
    args.connections = [int(c) for c in (args.connections or ("16" if args.quick else "1,16,64")).split(",")]
    args.peer_users = args.peer_users or min(args.users, 100_000)
    args.ops = args.ops.split(",") if args.ops else [op.name for op in ops.OPS]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(f"/tmp/scimd-bench-{args.users}")
    data_dir, log_dir = work / "data", work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    started = time.time()
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "users": args.users, "threads": args.threads, "duration_s": args.duration,
        "connections": args.connections, "quick": args.quick,
        "tool": "wrk" if args.tool == "wrk" or (args.tool == "auto" and load.have_wrk()) else "python",
        "machine": machine(), "git": git_state(),
    }
    say(f"bench: {args.users:,} users, {args.threads} threads, tool {results['tool']}, load {results['machine']['load_before']}")

    manifest = _seed(data_dir, args, results)
    # This run's writes (POSTs, Bulk, the in-process count) go to a copy, so a reused directory
    # stays at the size the report states instead of growing with every run.
    run_dir = work / "run"
    procs.copy_database(data_dir, run_dir)
    servers: list[procs.Server] = []
    try:
        main_scimd = _startup(run_dir, log_dir, token, args, results)
        servers.append(main_scimd)
        results["probes"] = probes(main_scimd, token, manifest, args)
        if not args.no_load:
            ceiling = procs.ceiling(log_dir, args.threads).start()
            servers.append(ceiling)
            peer = _start_peer(log_dir, token, args, results)
            if peer:
                servers.append(peer)
            results["operations"] = measure(main_scimd, ceiling, peer, token, manifest, args, results)
            results["bulk"] = bulk(main_scimd, peer, token, args)
            results["looking_glass"] = looking_glass(data_dir, log_dir, token, manifest, args)
            results["rss"]["after_load_kb"] = main_scimd.rss_kb()
    finally:
        for server in servers:
            server.stop()
    if not args.no_load:
        say("bench: Looking Glass cost in CPU time per request, in-process")
        results["looking_glass"]["cpu"] = inproc.looking_glass_cpu(
            run_dir, manifest, batch=100 if args.quick else 400, rounds=4 if args.quick else 8)
        say(f"bench: {results['looking_glass']['cpu']}")
        if not args.quick and instructions.available():
            say("bench: Looking Glass cost in instructions per served request, under valgrind (minutes)")
            counted = work / "instructions"
            try:
                results["looking_glass"]["instructions"] = instructions.count(data_dir, manifest, counted)
            finally:
                shutil.rmtree(counted, ignore_errors=True)
            say(f"bench: {results['looking_glass']['instructions']}")
    results["db_bytes_after"] = db_bytes(run_dir)
    shutil.rmtree(run_dir)
    results["machine"]["load_after"] = loadavg()
    results["elapsed_s"] = round(time.time() - started, 1)
    results["targets"] = report.targets(results)
    paths = report.write(results, args.out, args.name or default_name(args))
    say("bench: wrote " + ", ".join(str(p) for p in paths))
    say(report.markdown(results))
    return 0


def default_name(args: argparse.Namespace) -> str:
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    if args.quick:
        return f"{day}-quick"
    return day if args.users == 100_000 else f"{day}-{args.users}-users"


def say(text: str) -> None:
    print(text, flush=True)


# -- machine and data ------------------------------------------------------------------------


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_kb = 0
    try:
        mem_kb = int(next(ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines()
                          if ln.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    wrk = None
    if load.have_wrk():
        wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0].strip()
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "wrk": wrk,
            "load_before": loadavg()}


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the work tree held uncommitted changes to scimd/."""
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=procs.ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"), "scimd_dirty": bool(git("status", "--short", "scimd"))}


def db_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("scim.db*"))


def _seed(data_dir: Path, args: argparse.Namespace, results: dict[str, Any]) -> Manifest:
    manifest: Manifest | None = None
    if args.reuse and (data_dir / "scim.db").exists():
        try:
            manifest = Manifest.load(data_dir)
        except (OSError, ValueError, TypeError):
            manifest = None
        if manifest and manifest.users != args.users:
            manifest = None
    if manifest is None:
        manifest = seed(data_dir, args.users, log=say)
        results["seed"] = {"seconds": manifest.seconds, "reused": False}
    else:
        say(f"bench: reusing the {manifest.users:,}-user directory in {data_dir}")
        results["seed"] = {"seconds": manifest.seconds, "reused": True}
    results["seed"].update(counts=manifest.counts, db_bytes=db_bytes(data_dir))
    return manifest


def _startup(data_dir: Path, log_dir: Path, token: str, args: argparse.Namespace,
             results: dict[str, Any]) -> procs.Server:
    """Start scimd three times (exec to first 200 on /health); the last one stays up."""
    times: list[float] = []
    server = None
    for attempt in range(3):
        server = procs.scimd(data_dir, log_dir, token, args.threads).start()
        times.append(round(server.startup or 0.0, 3))
        if attempt < 2:
            server.stop()
    assert server is not None
    time.sleep(1.0)
    results["startup"] = {"seconds": times, "median_s": statistics.median(times)}
    results["rss"] = {"rest_kb": server.rss_kb()}
    say(f"bench: start-up {times} s, RSS at rest {results['rss']['rest_kb'] / 1024:.1f} MiB")
    return server


def _start_peer(log_dir: Path, token: str, args: argparse.Namespace, results: dict[str, Any]) -> procs.Server | None:
    from bench import peer as peer_module

    info: dict[str, Any] = {"name": "scim2-server", "version": peer_module.version(), "users": args.peer_users}
    results["peer"] = info
    if args.no_peer or info["version"] is None:
        info["skipped"] = "--no-peer" if args.no_peer else "scim2-server is not installed (pip install -e '.[bench]')"
        say(f"bench: peer skipped: {info['skipped']}")
        return None
    say(f"bench: seeding and starting scim2-server {info['version']} with {args.peer_users:,} users")
    server = procs.peer(log_dir, args.threads, args.peer_users, token).start(timeout=3600)
    info["startup_s"] = round(server.startup or 0.0, 1)
    info["rss_kb"] = server.rss_kb()
    return server


# -- measurements --------------------------------------------------------------------------


def settle(server: procs.Server, timeout: float = 300.0) -> None:
    """Wait until the server answers a cheap request fast: work queued by the previous run (a slow
    server keeps serving requests wrk has given up on) must not leak into the next."""
    deadline = time.monotonic() + timeout
    fast = 0
    while time.monotonic() < deadline and fast < 2:
        began = time.perf_counter()
        procs.get_status(server.port, server.health, server.token, timeout=timeout)
        fast = fast + 1 if time.perf_counter() - began < 0.05 else 0
        time.sleep(0.05)


def _drive(server: procs.Server, token: str, requests: list[Request], connections: int,
           args: argparse.Namespace, seconds: float | None = None) -> dict[str, Any]:
    result = load.run(server.base, token, requests, connections, seconds or args.duration, tool=args.tool).as_dict()
    settle(server)
    return result


def measure(scimd: procs.Server, ceiling: procs.Server, peer: procs.Server | None, token: str,
            manifest: Manifest, args: argparse.Namespace, results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    peak = 0
    for name in args.ops:
        op = ops.BY_NAME[name]
        requests = ops.requests_for(name, manifest, "/scim/v2")
        status, body, _ = load.call(scimd.base, token, requests[0], uniq=f"shape-{secrets.token_hex(4)}")
        load.call(ceiling.base, token, Request("POST", SHAPE_PATH, orjson.dumps({"status": status, "size": len(body)})))
        peer_requests, peer_status, peer_slow = None, None, False
        if peer is not None and op.peer:
            peer_requests = ops.requests_for(name, manifest, "/v2")
            for _ in range(2):  # the second: the peer builds an equality index on its first search
                peer_status, peer_body, peer_seconds = load.call(peer.base, token, peer_requests[0],
                                                                 uniq=f"shape-{secrets.token_hex(4)}")
            peer_slow = peer_seconds > SLOW_SECONDS
            if peer_status >= 400:
                say(f"bench: peer answers {peer_status} to {op.label}: {peer_body[:200]!r}; not compared")
                peer_requests = None
            elif peer_slow:
                say(f"bench: the peer takes {peer_seconds:.2f} s for one {op.label}: measured in bursts")
        say(f"bench: {op.label}: scimd {status}, {len(body)} bytes")
        warm = max(1.0, args.duration / 5)
        for server, reqs in ((scimd, requests), (ceiling, requests), (None if peer_slow else peer, peer_requests)):
            if server is not None and reqs is not None and not args.quick:
                load.run(server.base, token, reqs, 16, warm, tool=args.tool)
                settle(server)
        for connections in args.connections:
            row: dict[str, Any] = {"op": name, "label": op.label, "connections": connections, "status": status,
                                   "body_bytes": len(body), "load": loadavg()}
            runs = _interleaved(scimd, ceiling, peer, token, requests, peer_requests, connections, args, peer_slow)
            row["scimd"], row["ceiling"], row["peer"] = runs["scimd"], runs["ceiling"], runs.get("peer")
            peak = max(peak, runs["scimd_peak_kb"])
            if peer_status is not None:
                row["peer_status"] = peer_status
            row["ratio"] = _ratio(row["scimd"], row["ceiling"])
            row["peer_ratio"] = _ratio(row["peer"], row["ceiling"]) if row["peer"] else None
            row["vs_peer"] = _ratio(row["scimd"], row["peer"]) if row["peer"] else None
            rows.append(row)
            say(f"  c={connections:<3} scimd {row['scimd']['rps']:8.1f}/s p50 {row['scimd']['p50_ms']:7.2f} ms "
                f"p99 {row['scimd']['p99_ms']:7.2f} ms err {row['scimd']['errors']}  | ceiling "
                f"{row['ceiling']['rps']:8.1f}/s ratio {row['ratio']}"
                + (f"  | peer {row['peer']['rps']:8.1f}/s err {row['peer']['errors']}" if row["peer"] else ""))
    scimd_rss = scimd.rss_kb()
    results["rss"]["peak_load_kb"] = peak
    say(f"bench: scimd RSS peak under load {peak / 1024:.1f} MiB, now {scimd_rss / 1024:.1f} MiB")
    return rows


def _interleaved(scimd: procs.Server, ceiling: procs.Server, peer: procs.Server | None, token: str,
                 requests: list[Request], peer_requests: list[Request] | None, connections: int,
                 args: argparse.Namespace, peer_slow: bool = False) -> dict[str, Any]:
    """Rounds in ABC CBA order (scimd, ceiling, peer, then back), so a change in the machine's
    load during the measurement touches all three alike; results summed over the rounds."""
    rounds = 1 if args.quick else 2
    seconds = max(1.0, args.duration / rounds)
    plan = [("scimd", scimd, requests), ("ceiling", ceiling, requests)]
    if peer is not None and peer_requests is not None:
        plan.append(("peer", peer, peer_requests))
    parts: dict[str, list[dict[str, Any]]] = {who: [] for who, _, _ in plan}
    peak = 0
    for r in range(rounds):
        for who, server, reqs in (plan if r % 2 == 0 else plan[::-1]):
            if who == "scimd":
                with procs.PeakRss(server) as rss:
                    parts[who].append(_drive(server, token, reqs, connections, args, seconds))
                peak = max(peak, rss.peak)
            elif who == "peer" and peer_slow:
                # One request takes seconds and the peer serves one at a time (one storage lock):
                # a timed run would leave minutes of queued work behind it.
                parts[who].append(load.burst(server.base, token, reqs, min(connections, BURST)).as_dict())
            else:
                parts[who].append(_drive(server, token, reqs, connections, args, seconds))
    out: dict[str, Any] = {who: _combine(results) for who, results in parts.items()}
    out["scimd_peak_kb"] = peak
    return out


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(p["requests"] for p in parts)
    seconds = sum(p["seconds"] for p in parts)
    return {"rps": round(requests / seconds, 2) if seconds else 0.0, "requests": requests,
            "errors": sum(p["errors"] for p in parts), "seconds": round(seconds, 2),
            "p50_ms": round(statistics.median(p["p50_ms"] for p in parts), 3),
            "p99_ms": round(statistics.median(p["p99_ms"] for p in parts), 3),
            "mean_ms": round(statistics.mean(p["mean_ms"] for p in parts), 3),
            "rounds": [round(p["rps"], 1) for p in parts], "tool": parts[0]["tool"]}


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b["rps"]:
        return None
    return round(a["rps"] / b["rps"], 3)


def probes(scimd: procs.Server, token: str, manifest: Manifest, args: argparse.Namespace) -> dict[str, Any]:
    """Latency of single requests on one idle connection (service time, no queueing)."""
    repeat = 3 if args.quick else 7
    out: dict[str, Any] = {}
    for name, label in (("get_user", "GET /Users/{id}"), ("filter_username", 'filter userName eq'),
                        ("page_100", "GET /Users?startIndex=N&count=100"), ("filter_co", ops.FAMILY_CO)):
        requests = ops.requests_for(name, manifest, "/scim/v2")
        timings: list[float] = []
        statuses: set[int] = set()
        size = 0
        total = None
        for k in range(repeat):
            status, body, seconds = load.call(scimd.base, token, requests[k % len(requests)])
            timings.append(seconds * 1000)
            statuses.add(status)
            size = len(body)
            if name == "filter_co" and status == 200:
                document = orjson.loads(body)
                total = (document.get("totalResults"), document.get("itemsPerPage"))
        out[name] = {"label": label, "median_ms": round(statistics.median(timings), 2),
                     "min_ms": round(min(timings), 2), "max_ms": round(max(timings), 2),
                     "status": sorted(statuses), "body_bytes": size}
        if total:
            out[name]["totalResults"], out[name]["itemsPerPage"] = total
        say(f"bench: probe {label}: median {out[name]['median_ms']} ms ({sorted(statuses)}, {size} bytes)")
    return out


def bulk(scimd: procs.Server, peer: procs.Server | None, token: str, args: argparse.Namespace) -> dict[str, Any]:
    """1,000 single POSTs on one connection against one Bulk request of 1,000 POSTs."""
    count = 200 if args.quick else 1000
    rounds = 1 if args.quick else 3
    out: dict[str, Any] = {"operations": count, "rounds": rounds}
    for who, server, prefix in (("scimd", scimd, "/scim/v2"), ("peer", peer, "/v2")):
        if server is None:
            continue
        singles, bulks, statuses = [], [], set()
        for r in range(rounds):
            tag = secrets.token_hex(4)
            timed = load.sequential(server.base, token, ops.single_posts(prefix, count, f"s{tag}"))
            statuses.update(status for status, _ in timed)
            singles.append(sum(seconds for _, seconds in timed))
            status, body, seconds = load.call(server.base, token, ops.bulk_request(prefix, count, f"b{tag}"))
            bulks.append(seconds)
            if status != 200:
                statuses.add(status)
            else:
                statuses.update(int(op.get("status", 0)) for op in orjson.loads(body).get("Operations", []))
            settle(server)
        single_s, bulk_s = statistics.median(singles), statistics.median(bulks)
        out[who] = {"singles_s": round(single_s, 3), "bulk_s": round(bulk_s, 3),
                    "speedup": round(single_s / bulk_s, 2) if bulk_s else None, "statuses": sorted(statuses)}
        say(f"bench: {who}: {count} POSTs {single_s:.2f} s, one Bulk of {count} {bulk_s:.2f} s "
            f"(x{out[who]['speedup']}), statuses {sorted(statuses)}")
    return out


# Student's t, two-sided 95%, by degrees of freedom 1-30: a handful of rounds is not a normal
# sample. Beyond 30, 2.0 (t is 2.04 at 30, 2.00 at 60 and 1.96 in the limit).
_T95 = (12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13,
        2.12, 2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04)

_ABBA = ("on", "off", "off", "on")
RUNS_PER_ROUND = _ABBA.count("on")


def looking_glass(data_dir: Path, log_dir: Path, token: str, manifest: Manifest,
                  args: argparse.Namespace) -> dict[str, Any]:
    """The same GET and POST at 16 connections with SCIM_LOOKING_GLASS true and false: two daemons
    on two identical copies of the data (so neither has the main daemon's warm state or its
    database grown by the benchmark's writes), runs in ABBA order; the difference is the mean of
    each round's, with its 95% interval (paired_difference).

    A fresh pair of daemons for each of eight rounds: on this VM two daemons with identical
    settings differ by up to 7.5% (docs/benchmarks.md, "Session 5"), so one pair for the whole
    comparison measured that pair's luck as much as the capture. Eight pairs average it out."""
    rounds = 1 if args.quick else 8
    copies = {mode: data_dir.parent / f"data-lg-{mode}" for mode in ("on", "off")}
    names = ("get_user", "post_user")
    runs: dict[str, dict[str, list[float]]] = {name: {"on": [], "off": []} for name in names}
    try:
        for mode, copy_dir in copies.items():
            procs.copy_database(data_dir, copy_dir)  # a data directory serves one daemon at a time
        for _ in range(rounds):
            _looking_glass_round(copies, log_dir, token, manifest, args, runs)
    finally:
        for copy_dir in copies.values():
            shutil.rmtree(copy_dir, ignore_errors=True)
    out: dict[str, Any] = {"connections": 16, "daemon_pairs": rounds}
    for name, by_mode in runs.items():
        difference, interval = paired_difference(by_mode["on"], by_mode["off"], RUNS_PER_ROUND)
        out[name] = {"on_rps": round(statistics.median(by_mode["on"]), 1),
                     "off_rps": round(statistics.median(by_mode["off"]), 1),
                     "difference": round(difference, 3), "interval": round(interval, 3) if interval else None,
                     "runs": by_mode}
        say(f"bench: Looking Glass {name}: on slower than off by {difference:.1%} (± {interval or 0:.1%})")
    return out


def paired_difference(on: list[float], off: list[float], per_round: int) -> tuple[float, float | None]:
    """How much slower capture on is than off, (1 - on/off) per round of one daemon pair, and the
    half-width of its 95% interval (None from a single round).

    Each round's pair is judged against itself, so what one pair of processes happens to be
    (two identical daemons differ by up to 7.5% here) cancels out of its difference, and the
    spread of the differences across rounds says how far their mean can be trusted."""
    rounds = [1 - statistics.mean(on[i:i + per_round]) / statistics.mean(off[i:i + per_round])
              for i in range(0, len(on), per_round)]
    mean = statistics.mean(rounds)
    if len(rounds) < 2:
        return mean, None
    t = _T95[len(rounds) - 2] if len(rounds) <= len(_T95) + 1 else 2.0
    return mean, t * statistics.stdev(rounds) / len(rounds) ** 0.5


def _looking_glass_round(copies: dict[str, Path], log_dir: Path, token: str, manifest: Manifest,
                         args: argparse.Namespace, runs: dict[str, dict[str, list[float]]]) -> None:
    """One fresh pair of daemons, capture on and off, each operation in ABBA order."""
    daemons: dict[str, procs.Server] = {}
    try:
        for mode, copy_dir in copies.items():
            daemons[mode] = procs.scimd(copy_dir, log_dir, token, args.threads, name=f"scimd-lg-{mode}",
                                        looking_glass=mode == "on").start()
        for name, by_mode in runs.items():
            requests = ops.requests_for(name, manifest, "/scim/v2")
            for mode in _ABBA:
                by_mode[mode].append(_drive(daemons[mode], token, requests, 16, args, args.duration / 2)["rps"])
    finally:
        for daemon in daemons.values():
            daemon.stop()


if __name__ == "__main__":
    raise SystemExit(main())
