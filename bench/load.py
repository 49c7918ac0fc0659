"""Load drivers: wrk with a Lua script when wrk is installed, else a threaded stdlib client.

A workload is a list of requests (method, path, body) cycled in order; `@@UNIQ@@` in a path or
body becomes a token unique to the run and the request (POST userNames, PATCH values). Both
drivers read the same list, so they send the same requests.
"""

from __future__ import annotations

import http.client
import itertools
import math
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import orjson

UNIQ = "@@UNIQ@@"

LUA = r"""
local reqs, counter, idx, nonce, token = {}, 0, 0, "", ""
function init(args)
  local path = args[1]; token = args[2]; nonce = args[3]
  for line in io.lines(path) do
    local m, p, b = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    reqs[#reqs + 1] = {m, p, b}
  end
end
function request()
  idx = idx % #reqs + 1
  counter = counter + 1
  local r = reqs[idx]
  local uniq = nonce .. "-" .. counter
  local path = (r[2]:gsub("@@UNIQ@@", uniq))
  local headers = {["Authorization"] = "Bearer " .. token}
  local body = nil
  if r[3] ~= "" then
    body = (r[3]:gsub("@@UNIQ@@", uniq))
    headers["Content-Type"] = "application/scim+json"
  end
  return wrk.format(r[1], path, headers, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


@dataclass
class Request:
    method: str
    path: str
    body: bytes = b""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    errors: int
    seconds: float
    tool: str

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def substitute(text: str | bytes, uniq: str) -> str | bytes:
    if isinstance(text, bytes):
        return text.replace(UNIQ.encode(), uniq.encode())
    return text.replace(UNIQ, uniq)


def run(base: str, token: str, requests: list[Request], connections: int, seconds: float,
        tool: str = "auto", timeout: float = 30.0) -> Result:
    """Drive `requests` (cycled) at base with `connections` keep-alive connections for `seconds`."""
    if tool == "auto":
        tool = "wrk" if have_wrk() else "python"
    if tool == "wrk":
        return _run_wrk(base, token, requests, connections, seconds, timeout)
    return _run_python(base, token, requests, connections, seconds, timeout)


def _run_wrk(base: str, token: str, requests: list[Request], connections: int, seconds: float,
             timeout: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script, lines = Path(tmp) / "load.lua", Path(tmp) / "requests.tsv"
        script.write_text(LUA)
        lines.write_text("".join(f"{r.method}\t{r.path}\t{r.body.decode()}\n" for r in requests))
        nonce = uuid.uuid4().hex[:10]
        duration = max(1, math.ceil(seconds))
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={int(timeout)}s", "-s", str(script),
               base, "--", str(lines), token, nonce]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    data = orjson.loads(line[6:])
    elapsed = data["duration_us"] / 1e6
    return Result(rps=data["requests"] / elapsed if elapsed else 0.0, p50_ms=data["p50_us"] / 1000,
                  p99_ms=data["p99_us"] / 1000, mean_ms=data["mean_us"] / 1000, requests=data["requests"],
                  errors=data["errors"], seconds=elapsed, tool="wrk")


def _run_python(base: str, token: str, requests: list[Request], connections: int, seconds: float,
                timeout: float) -> Result:
    host, port = _host_port(base)
    order = itertools.count()
    nonce = uuid.uuid4().hex[:10]
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start_at = time.perf_counter() + 0.05
    deadline = start_at + seconds

    def worker(slot: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        while time.perf_counter() < start_at:
            time.sleep(0.001)
        while time.perf_counter() < deadline:
            n = next(order)
            request = requests[n % len(requests)]
            uniq = f"{nonce}-{n}"
            headers = {"Authorization": f"Bearer {token}"}
            body = substitute(request.body, uniq) if request.body else None
            if body:
                headers["Content-Type"] = "application/scim+json"
            began = time.perf_counter()
            try:
                conn.request(request.method, str(substitute(request.path, uniq)), body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status >= 400:
                    errors[slot] += 1
            except OSError:
                errors[slot] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            latencies[slot].append(time.perf_counter() - began)
        conn.close()

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + timeout + 10)
    elapsed = max(time.perf_counter() - start_at, 1e-9)
    merged = sorted(itertools.chain.from_iterable(latencies))
    return Result(rps=len(merged) / elapsed, p50_ms=_percentile(merged, 50) * 1000,
                  p99_ms=_percentile(merged, 99) * 1000,
                  mean_ms=(sum(merged) / len(merged) * 1000) if merged else 0.0, requests=len(merged),
                  errors=sum(errors), seconds=elapsed, tool="python")


def burst(base: str, token: str, requests: list[Request], count: int, timeout: float = 600.0) -> Result:
    """`count` requests sent at once on `count` connections, each waited for: throughput of a
    server too slow for a timed run (one request taking seconds), without leaving a backlog."""
    host, port = _host_port(base)
    nonce = uuid.uuid4().hex[:10]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def worker(n: int) -> None:
        request = requests[n % len(requests)]
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        headers = {"Authorization": f"Bearer {token}"}
        body = substitute(request.body, f"{nonce}-{n}") if request.body else None
        if body:
            headers["Content-Type"] = "application/scim+json"
        barrier.wait()
        began = time.perf_counter()
        try:
            conn.request(request.method, str(substitute(request.path, f"{nonce}-{n}")), body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            failed = response.status >= 400
        except OSError:
            failed = True
        finally:
            conn.close()
        with lock:
            latencies.append(time.perf_counter() - began)
            errors[0] += failed

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10)
    elapsed = time.perf_counter() - began
    merged = sorted(latencies)
    return Result(rps=len(merged) / elapsed, p50_ms=_percentile(merged, 50) * 1000, p99_ms=_percentile(merged, 99) * 1000,
                  mean_ms=(sum(merged) / len(merged) * 1000) if merged else 0.0, requests=len(merged),
                  errors=errors[0], seconds=elapsed, tool="burst")


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def _host_port(base: str) -> tuple[str, int]:
    hostport = base.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def call(base: str, token: str, request: Request, uniq: str = "sample",
         timeout: float = 120.0) -> tuple[int, bytes, float]:
    """One request on a fresh connection: (status, body, seconds)."""
    host, port = _host_port(base)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"}
    body = substitute(request.body, uniq) if request.body else None
    if body:
        headers["Content-Type"] = "application/scim+json"
    try:
        began = time.perf_counter()
        conn.request(request.method, str(substitute(request.path, uniq)), body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - began
    finally:
        conn.close()


def sequential(base: str, token: str, requests: Iterable[Request], timeout: float = 120.0) -> list[tuple[int, float]]:
    """Requests one after another on one keep-alive connection: [(status, seconds)]."""
    host, port = _host_port(base)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    out: list[tuple[int, float]] = []
    nonce = uuid.uuid4().hex[:10]
    try:
        for n, request in enumerate(requests):
            uniq = f"{nonce}-s{n}"
            headers = {"Authorization": f"Bearer {token}"}
            body = substitute(request.body, uniq) if request.body else None
            if body:
                headers["Content-Type"] = "application/scim+json"
            began = time.perf_counter()
            conn.request(request.method, str(substitute(request.path, uniq)), body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            out.append((response.status, time.perf_counter() - began))
    finally:
        conn.close()
    return out
