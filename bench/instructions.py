"""Machine instructions per served request, Looking Glass capture on and off: the whole daemon
(waitress, the app, every thread) under valgrind's callgrind.

A served request's throughput, once the CPU is the bound, is the inverse of the CPU work it
takes; a daemon that executes X% more instructions per request serves about X% fewer requests.
The count does not depend on what else the machine is doing (the capture's share of a GET came
out at 3.5% and 3.7% in two runs), where time on the shared VM these benchmarks run on does: two
daemons with identical settings differ in throughput by up to 7.5%, more than the 5% the
Looking Glass is allowed (docs/benchmarks.md, "Session 6").

Each mode gets its own daemon on its own copy of the database. One keep-alive connection sends
`warm` requests (they fill the Looking Glass's ring, so the counted ones evict events, as on a
server), then callgrind's counters are zeroed, `measured` requests are sent and the counters
dumped. What a count cannot see: what each instruction costs (cache misses), and contention
for the GIL and the locks, since valgrind runs one thread at a time. It measures the work the
capture adds, not how that work competes under load.

    python -m bench.instructions --data /tmp/scimd-bench-100000/data
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable

import orjson

from bench import load, ops, procs, report
from bench.seed import Manifest, existing_or_seeded

OPERATIONS = ("get_user", "post_user")
TOKEN = "instructions-token"
STARTUP_SECONDS = 600.0  # under valgrind the daemon starts 50-100x slower


def available() -> bool:
    return bool(shutil.which("valgrind") and shutil.which("callgrind_control"))


def count(data_dir: Path, manifest: Manifest, work: Path, operations: Iterable[str] = OPERATIONS,
          warm: int = 600, measured: int = 500) -> dict[str, dict[str, float]]:
    """{operation: {"off": instructions per request, "on": ..., "share": (on - off) / on}}.

    The two modes of an operation run at once, one daemon per core."""
    out: dict[str, dict[str, float]] = {}
    for name in operations:
        requests = ops.requests_for(name, manifest, "/scim/v2")
        counts: dict[str, float] = {}
        errors: list[BaseException] = []

        def measure(mode: str) -> None:
            try:
                counts[mode] = _per_request(data_dir, work / f"{name}-{mode}", requests, mode == "on", warm, measured)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
                errors.append(exc)

        threads = [threading.Thread(target=measure, args=(mode,)) for mode in ("off", "on")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        out[name] = {**counts, "share": (counts["on"] - counts["off"]) / counts["on"]}
    return out


def _per_request(data_dir: Path, work: Path, requests: list[load.Request], looking_glass: bool,
                 warm: int, measured: int) -> float:
    copy = work / "data"
    procs.copy_database(data_dir, copy)
    port = procs.free_port()
    dump = work / "callgrind.out"
    env = {**os.environ, "PYTHONPATH": str(procs.ROOT), "SHOWCASE_LISTEN_ADDR": f"127.0.0.1:{port}",
           "SCIM_DATA_DIR": str(copy), "SCIM_API_TOKEN": TOKEN, "SCIM_LOOKING_GLASS": str(looking_glass).lower()}
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", sys.executable, "-m", "scimd", "serve"]
    with open(work / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(command, cwd=procs.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(daemon, port)
            base = f"http://127.0.0.1:{port}"
            _send(base, [requests[i % len(requests)] for i in range(warm)])
            _callgrind_control("-z", daemon.pid)  # zero: what follows is the measured requests only
            _send(base, [requests[i % len(requests)] for i in range(warm, warm + measured)])
            _callgrind_control("-d", daemon.pid)
            return _total_instructions(dump.with_name(dump.name + ".1")) / measured
        finally:
            daemon.terminate()
            daemon.wait()


def _wait_ready(daemon: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"scimd under valgrind exited with {daemon.returncode}")
        if procs.get_status(port, "/health", timeout=5.0) == 200:
            return
        time.sleep(0.5)
    raise RuntimeError(f"scimd under valgrind did not answer within {STARTUP_SECONDS:.0f} s")


def _send(base: str, requests: list[load.Request]) -> None:
    statuses = {status for status, _ in load.sequential(base, TOKEN, requests)}
    if not statuses <= {200, 201}:
        raise RuntimeError(f"unexpected statuses {sorted(statuses)}")


def _callgrind_control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=120)


def _total_instructions(dump: Path) -> int:
    """The dump's event total (`summary:` or, in older valgrind, `totals:`), all threads together."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {dump}")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a seeded data directory (python -m bench --reuse keeps one); "
                                       "default: seed --users into a temporary one")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--ops", default=",".join(OPERATIONS), help="comma-separated operations")
    parser.add_argument("--warm", type=int, default=600, help="requests before counting (fill the ring)")
    parser.add_argument("--measured", type=int, default=500, help="requests counted per operation and mode")
    parser.add_argument("--json", help="also write the counts here")
    args = parser.parse_args(argv)
    if not available():
        print("valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="scimd-instructions-") as scratch:
        work = Path(scratch)
        data, manifest = existing_or_seeded(args.data, work, args.users)
        counts = count(data, manifest, work, args.ops.split(","), args.warm, args.measured)
    print(f"Instructions per served request, {manifest.users:,} seeded users, {args.measured} requests each:\n")
    print(report.capture_table(counts))
    if args.json:
        Path(args.json).write_text(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
