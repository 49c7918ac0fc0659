"""`python -m bench --quick` runs end to end and writes its results (no performance assertions:
the numbers belong in bench/results/ and docs/benchmarks.md, not in a pass/fail)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = {"get_user", "filter_username", "filter_email", "group_by_name", "page_100", "post_user", "patch_user",
              "patch_big_group", "patch_small_group"}


def _users_in(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "scim.db")
    try:
        return int(conn.execute("SELECT count(*) FROM resources WHERE type = 'User'").fetchone()[0])
    finally:
        conn.close()


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
    # The run wrote to a copy: the seeded directory holds what the report says, for the next --reuse.
    assert _users_in(tmp_path / "work" / "data") == results["seed"]["counts"]["users"]
    assert results["db_bytes_after"] > 0 and not (tmp_path / "work" / "run").exists()
    assert results["startup"]["median_s"] > 0 and results["rss"]["rest_kb"] > 0
    assert results["bulk"]["scimd"]["statuses"] == [201]
    assert {"get_user", "post_user", "cpu"} <= set(results["looking_glass"])
    assert {"get_user", "post_user"} <= set(results["looking_glass"]["cpu"])
    assert {t["target"] for t in results["targets"]} and all("pass" in t for t in results["targets"])
    assert (out / "ci.md").read_text().count("| Target |") == 1


@pytest.mark.slow
def test_floor_measures_a_row_read_and_python_work_against_the_ceiling(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.floor", "--users", "200", "--cpu-us", "0,40", "--duration", "0.3",
         "--rounds", "1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads(out.read_text())
    assert [row["cpu_us"] for row in rows] == [0, 40]
    for row in rows:
        assert row["errors"] == 0 and row["floor"] > 0 and row["ceiling"] > 0
        assert row["ratio"] == pytest.approx(row["floor"] / row["ceiling"])
    assert "| 40 |" in proc.stdout and "200 seeded users" in proc.stdout


def test_floor_app_reads_the_user_it_is_asked_for(tmp_path: Path) -> None:
    from bench.floor import Floor
    from scimd.schema import USER_TYPE
    from scimd.store import Store

    store = Store(tmp_path / "scim.db")
    try:
        with store.write() as tx:
            tx.insert(USER_TYPE, "u-1", {"userName": "one"}, None)
        app = Floor(store, cpu_us=5, size=10)
        statuses: list[str] = []
        body = app({"PATH_INFO": "/scim/v2/Users/u-1"}, lambda status, headers: statuses.append(status))
        app({"PATH_INFO": "/scim/v2/Users/nobody"}, lambda status, headers: statuses.append(status))
        assert statuses == ["200 OK", "404 Not Found"] and body == [b"x" * 10]
    finally:
        store.close()


@pytest.mark.slow
def test_bytecode_counts_cover_each_operation_and_what_capture_adds(tmp_path: Path) -> None:
    out = tmp_path / "counts.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bytecodes", "--users", "300", "--measured", "5", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    counts = json.loads(out.read_text())
    assert list(counts) == ["get_user", "filter_username", "page_100", "post_user", "patch_user"]
    for name, by_mode in counts.items():
        assert 0 < by_mode["off"] < by_mode["on"], name  # recording an exchange is never free
        assert f"| {name} | {by_mode['off']:,.0f} |" in proc.stdout


def test_bytecode_counts_leave_a_seeded_directory_as_it_was(tmp_path: Path) -> None:
    from bench.seed import seed

    manifest = seed(tmp_path / "data", 300, log=lambda *_: None)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bytecodes", "--data", str(tmp_path / "data"), "--ops", "post_user",
         "--measured", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "| post_user |" in proc.stdout
    assert _users_in(tmp_path / "data") == manifest.counts["users"]  # its POSTs went to a copy


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("valgrind") or not shutil.which("callgrind_control"),
                    reason="valgrind is not installed (.ci/run installs it)")
def test_instruction_counts_of_the_whole_daemon_show_what_capture_adds(tmp_path: Path) -> None:
    # 150 requests first: until each of the 16 worker threads has served one (and opened its SQLite
    # connection) the counts of the two daemons differ by more than the capture adds.
    out = tmp_path / "instructions.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--users", "300", "--ops", "get_user", "--warm", "150",
         "--measured", "60", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    counts = json.loads(out.read_text())
    assert list(counts) == ["get_user"]
    get = counts["get_user"]
    assert 100_000 < get["off"] < get["on"]  # a served GET is hundreds of thousands; recording is never free
    assert get["share"] == pytest.approx((get["on"] - get["off"]) / get["on"])
    assert f"| get_user | {get['off']:,.0f} | {get['on']:,.0f} |" in proc.stdout


@pytest.mark.parametrize(("on", "off", "difference", "interval"), [
    # every round 10% slower with capture on: the mean says so, and rounds that agree leave no doubt
    ([90, 90, 45, 45], [100, 100, 50, 50], 0.10, 0.0),
    # identical runs: no difference
    ([70, 70, 70, 70, 70, 70], [70, 70, 70, 70, 70, 70], 0.0, 0.0),
    # a fast pair and a slow pair: each round is judged against itself (0% and 20%), and with two
    # rounds that disagree, t(1) = 12.71 makes the interval wide: 12.71 * stdev 0.1414 / sqrt(2)
    ([100, 100, 40, 40], [100, 100, 50, 50], 0.10, 1.271),
])
def test_paired_difference_judges_each_daemon_pair_against_itself(on: list[float], off: list[float],
                                                                  difference: float, interval: float) -> None:
    from bench.run import paired_difference

    mean, half_width = paired_difference(on, off, per_round=2)
    assert mean == pytest.approx(difference)
    assert half_width == pytest.approx(interval, abs=1e-3)


def test_paired_difference_of_one_round_has_no_interval() -> None:
    from bench.run import paired_difference

    assert paired_difference([95, 95], [100, 100], per_round=2) == (pytest.approx(0.05), None)


def test_instruction_total_is_read_from_a_callgrind_dump(tmp_path: Path) -> None:
    from bench.instructions import _total_instructions

    dump = tmp_path / "callgrind.out.1"
    dump.write_text("# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\nevents: Ir\n"
                    "fn=(1) main\n0 12\nsummary: 839477000\n\n\ntotals: 839477000\n")
    assert _total_instructions(dump) == 839_477_000
    dump.write_text("events: Ir\nfn=(1) main\n0 12\n")
    with pytest.raises(RuntimeError):
        _total_instructions(dump)


def _looking_glass_verdict(glass: dict[str, object]) -> dict[str, object]:
    from bench.report import targets

    results = {"users": 100_000, "looking_glass": glass}
    return next(t for t in targets(results) if t["target"].startswith("Looking Glass"))


def test_looking_glass_target_is_judged_by_instructions_when_they_were_counted() -> None:
    timed = {"get_user": {"difference": 0.08, "interval": 0.06}, "post_user": {"difference": -0.01, "interval": 0.05}}
    counted = {"get_user": {"on": 839_000, "off": 810_000, "share": 0.035},
               "post_user": {"on": 1_757_000, "off": 1_682_000, "share": 0.043}}
    verdict = _looking_glass_verdict({**timed, "instructions": counted})
    assert verdict["pass"] is True and verdict["value"] == 0.043
    assert "throughput lost: get_user 8.0% ± 6.0%" in str(verdict["shown"])  # shown beside the count

    too_costly = {**counted, "post_user": {**counted["post_user"], "share": 0.051}}
    assert _looking_glass_verdict({**timed, "instructions": too_costly})["pass"] is False


def test_looking_glass_target_without_valgrind_is_judged_by_throughput() -> None:
    verdict = _looking_glass_verdict({"get_user": {"difference": 0.08, "interval": 0.06},
                                      "post_user": {"difference": 0.01, "interval": 0.05}})
    assert verdict["pass"] is False and verdict["value"] == 0.08
