"""`python -m bench --quick` runs end to end and writes its results (no performance assertions:
the numbers belong in bench/results/ and docs/benchmarks.md, not in a pass/fail)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = {"get_user", "filter_username", "filter_email", "group_by_name", "page_100", "post_user", "patch_user",
              "patch_big_group", "patch_small_group"}


@pytest.mark.slow
def test_quick_benchmark_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    # --no-peer: scim2-server is a `bench` extra, not a test dependency; the full run compares it.
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-peer", "--out", str(out), "--work-dir", str(tmp_path / "work"),
         "--name", "ci"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    results = json.loads((out / "ci.json").read_text())
    for key in ("date", "command", "machine", "users", "threads", "tool", "seed", "startup", "rss", "probes",
                "operations", "bulk", "looking_glass", "targets", "peer", "chart"):
        assert key in results, key
    assert results["users"] == 2000 and results["quick"] is True
    assert {row["op"] for row in results["operations"]} == OPERATIONS
    for row in results["operations"]:
        assert row["scimd"]["requests"] > 0 and row["ceiling"]["requests"] > 0, row
        assert row["scimd"]["errors"] == 0, row
        assert row["ratio"] is not None
    assert results["seed"]["counts"]["users"] >= 2000
    assert results["startup"]["median_s"] > 0 and results["rss"]["rest_kb"] > 0
    assert results["bulk"]["scimd"]["statuses"] == [201]
    assert {"get_user", "post_user", "cpu"} <= set(results["looking_glass"])
    assert {"get_user", "post_user"} <= set(results["looking_glass"]["cpu"])
    assert {t["target"] for t in results["targets"]} and all("pass" in t for t in results["targets"])
    assert (out / "ci.md").read_text().count("| Target |") == 1
