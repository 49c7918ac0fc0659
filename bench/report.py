"""Results out: the targets of issue 11 judged, the JSON, a Markdown table and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import orjson

MAIN_CONNECTIONS = 16
MILLION = 1_000_000


def capture_table(counts: dict[str, dict[str, float]]) -> str:
    """A Markdown table of per-request counts ({operation: {"off": n, "on": n}}), capture off and on."""
    lines = ["| operation | capture off | capture on | capture's share |", "|---|---:|---:|---:|"]
    for name, by_mode in counts.items():
        off, on = by_mode["off"], by_mode["on"]
        lines.append(f"| {name} | {off:,.0f} | {on:,.0f} | {(on - off) / on:.1%} |")
    return "\n".join(lines)


def _looking_glass_target(glass: dict[str, Any], add: Callable[..., None]) -> None:
    """Judged by the instructions a served request executes when they were counted: that count is
    deterministic, while the throughput difference on the shared VM spreads wider than the 5% it
    is to resolve (docs/benchmarks.md, "Session 6"); the throughput difference is shown beside it."""
    names = ("get_user", "post_user")
    counted = glass.get("instructions") or {}
    shares = {k: counted[k]["share"] for k in names if k in counted}
    timed = {k: (glass[k]["difference"], glass[k].get("interval")) for k in names
             if glass.get(k, {}).get("difference") is not None}
    throughput = ", ".join(f"{k} {d:.1%}" + (f" ± {i:.1%}" if i else "") for k, (d, i) in timed.items())
    if shares:
        worst: float | None = max(shares.values())
        shown = "instructions added: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()) + (
            f"; throughput lost: {throughput}" if throughput else "")
        note = ("judged by the instructions a served request executes, the whole daemon under valgrind, which "
                "bound throughput once the CPU is saturated; beside it the throughput difference at 16 "
                "connections, mean of fresh daemon pairs with its 95% interval")
    else:
        worst = max(d for d, _ in timed.values()) if timed else None
        shown = f"throughput lost: {throughput}" if throughput else "-"
        note = "throughput at 16 connections, mean of fresh daemon pairs with its 95% interval (valgrind absent)"
    add("Looking Glass on vs off, GET and POST", "<= 5%", worst, worst is not None and worst <= 0.05, shown, note)


def _row(results: dict[str, Any], op: str, connections: int = MAIN_CONNECTIONS) -> dict[str, Any] | None:
    return next((r for r in results.get("operations") or [] if r["op"] == op and r["connections"] == connections),
                None)


def _rps(results: dict[str, Any], op: str) -> float | None:
    row = _row(results, op)
    return row["scimd"]["rps"] if row and row["scimd"]["rps"] else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what it asks, the measured value, and pass (None when this run cannot tell)."""
    out: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: float | None, ok: bool | None, shown: str, note: str = "") -> None:
        out.append({"target": name, "goal": goal, "value": value, "shown": shown,
                    "pass": ok if value is not None else None, "note": note})

    for op, goal in (("get_user", 0.6), ("filter_username", 0.5), ("post_user", 0.35)):
        row = _row(results, op)
        ratio = row["ratio"] if row else None
        add(f"{row['label'] if row else op} vs ceiling at 16 connections", f">= {goal}", ratio,
            ratio is not None and ratio >= goal, f"{ratio:.2f}" if ratio is not None else "-")
    get, by_name = _rps(results, "get_user"), _rps(results, "filter_username")
    slower = get / by_name if get and by_name else None
    add("filter userName eq time / GET by id time (16 connections)", "<= 1.3", slower,
        slower is not None and slower <= 1.3, f"{slower:.3f}x" if slower else "-")
    probes = results.get("probes") or {}
    # The issue's sentence judges the co filter and the page by the time one request takes; the
    # same measure for the lookup, beside the one under load above.
    get_ms, by_name_ms = (probes.get(op, {}).get("median_ms") for op in ("get_user", "filter_username"))
    idle = by_name_ms / get_ms if get_ms and by_name_ms else None
    add("filter userName eq time / GET by id time (one idle connection, median)", "<= 1.3", idle,
        idle is not None and idle <= 1.3, f"{idle:.2f}x ({by_name_ms:.1f} / {get_ms:.1f} ms)" if idle else "-")
    co = probes.get("filter_co", {}).get("median_ms")
    add('name.familyName co "x" (one idle connection, median)', "< 300 ms", co, co is not None and co < 300,
        f"{co:.0f} ms" if co is not None else "-", _co_note(probes.get("filter_co")))
    page = probes.get("page_100", {}).get("median_ms")
    add("100-item page (one idle connection, median)", "< 50 ms", page, page is not None and page < 50,
        f"{page:.1f} ms" if page is not None else "-")
    big, small = _rps(results, "patch_big_group"), _rps(results, "patch_small_group")
    member = small / big if big and small else None
    add("add a member: 100,000-member group time / 10-member group time (16 connections)", "<= 2", member,
        member is not None and member <= 2, f"{member:.2f}x" if member else "-",
        "" if results["users"] >= 100_000 else f"the big group has {results['users']:,} members in this run")
    speedup = ((results.get("bulk") or {}).get("scimd") or {}).get("speedup")
    add("Bulk of 1,000 creates vs 1,000 POSTs", ">= 3x faster", speedup, speedup is not None and speedup >= 3,
        f"{speedup:.1f}x" if speedup else "-")
    _looking_glass_target(results.get("looking_glass") or {}, add)
    shared = [r for r in results.get("operations") or [] if r["connections"] == MAIN_CONNECTIONS and r.get("vs_peer")]
    least = min(shared, key=lambda r: r["vs_peer"]) if shared else None
    add("scimd vs peer on every shared operation (16 connections)", ">= 3x", least["vs_peer"] if least else None,
        least is not None and least["vs_peer"] >= 3,
        f"min {least['vs_peer']:.1f}x ({least['label']})" if least else "-")
    at_million = results["users"] >= MILLION
    rest = (results.get("rss") or {}).get("rest_kb")
    rest_mb = rest * 1024 / 1e6 if rest else None
    add("RSS at rest with 1,000,000 users", "< 100 MB", rest_mb if at_million else None,
        rest_mb is not None and rest_mb < 100, f"{rest_mb:.1f} MB" if rest_mb else "-",
        "" if at_million else f"measured at {results['users']:,} users; judged by the 1,000,000-user run")
    start = (results.get("startup") or {}).get("median_s")
    add("start-up (exec to first 200 on /health) with 1,000,000 users", "< 2 s", start if at_million else None,
        start is not None and start < 2, f"{start:.2f} s" if start is not None else "-",
        "" if at_million else f"measured at {results['users']:,} users; judged by the 1,000,000-user run")
    return out


def _co_note(probe: dict[str, Any] | None) -> str:
    if not probe or probe.get("totalResults") is None:
        return ""
    return f"{probe['totalResults']:,} matches, {probe['itemsPerPage']:,} returned"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"## {results['users']:,} users: {results['date']}",
        "",
        f"`{results['command']}` on {m['cores']} cores ({m['cpu']}, {m['memory_gb']} GB), Python {m['python']}, "
        f"SQLite {m['sqlite']}, load tool {results['tool']}{' (' + m['wrk'] + ')' if m.get('wrk') else ''}; "
        f"{results['threads']} server threads; {results['duration_s']:g} s per run. Load average before "
        f"{m['load_before']}, after {m.get('load_after', '?')}.",
        "",
    ]
    seed = results.get("seed") or {}
    rss = results.get("rss") or {}
    start = results.get("startup") or {}
    lines += [
        f"- Seed: {seed.get('counts', {}).get('users', 0):,} users, {seed.get('counts', {}).get('groups', 0):,} groups, "
        f"{seed.get('counts', {}).get('memberships', 0):,} memberships in {seed.get('seconds', 0):.1f} s"
        f"{' (reused)' if seed.get('reused') else ''}; database {seed.get('db_bytes', 0) / 1e6:,.0f} MB.",
        f"- Start-up (exec to first 200 on /health): {start.get('seconds')} s, median {_fmt(start.get('median_s'), 2)} s.",
        f"- scimd RSS: at rest {_fmt((rss.get('rest_kb') or 0) * 1024 / 1e6)} MB"
        + (f"; peak under load {_fmt(rss['peak_load_kb'] * 1024 / 1e6)} MB; after the load "
           f"{_fmt((rss.get('after_load_kb') or 0) * 1024 / 1e6)} MB." if rss.get("peak_load_kb") else
           " (no load in this run)."),
    ]
    peer = results.get("peer") or {}
    if peer.get("skipped"):
        lines.append(f"- Peer: skipped ({peer['skipped']}).")
    elif peer:
        lines.append(f"- Peer: scim2-server {peer.get('version')}, {peer.get('users', 0):,} users (+ the same spare "
                     f"users and groups), seeded and started in {_fmt(peer.get('startup_s'))} s, RSS "
                     f"{_fmt((peer.get('rss_kb') or 0) * 1024 / 1e6)} MB.")
    lines.append("")
    operations = results.get("operations") or []
    if operations:
        lines += [f"### Throughput at {MAIN_CONNECTIONS} connections", "", *_table(
            [r for r in operations if r["connections"] == MAIN_CONNECTIONS]), "",
            "### Every connection count", "", *_table(operations), ""]
        if any((r.get("peer") or {}).get("tool") == "burst" for r in operations):
            lines += ["† One peer request takes over 0.25 s here, and the peer serves one request at a time (one "
                      "lock around its storage): measured as min(connections, 4) requests sent at once, each waited "
                      "for, instead of a timed run that would leave minutes of queued work behind it.", ""]
    probes = results.get("probes") or {}
    if probes:
        lines += ["### One request at a time (idle connection; median of several)", "",
                  "| Request | median ms | min ms | max ms | status | body bytes |", "|---|---:|---:|---:|---|---:|"]
        for probe in probes.values():
            extra = f" ({_co_note(probe)})" if probe.get("totalResults") is not None else ""
            lines.append(f"| `{probe['label']}`{extra} | {probe['median_ms']:.1f} | {probe['min_ms']:.1f} | "
                         f"{probe['max_ms']:.1f} | {probe['status']} | {probe['body_bytes']:,} |")
        lines.append("")
    bulk = results.get("bulk") or {}
    for who in ("scimd", "peer"):
        if who in bulk:
            b = bulk[who]
            lines.append(f"- Bulk ({who}): {bulk['operations']:,} single POSTs on one connection {b['singles_s']:.2f} s; "
                         f"one Bulk of {bulk['operations']:,} POSTs {b['bulk_s']:.2f} s: {_fmt(b['speedup'])}x "
                         f"(statuses {b['statuses']}; median of {bulk['rounds']}).")
    glass = results.get("looking_glass") or {}
    cpu = glass.get("cpu") or {}
    for name in ("get_user", "post_user"):
        if name in cpu:
            lines.append(f"- Looking Glass, {name}, CPU per request in-process: on {cpu[name]['on_us']:.0f} µs, "
                         f"off {cpu[name]['off_us']:.0f} µs (+{cpu[name]['overhead']:.1%}).")
        if name in glass:
            g = glass[name]
            spread = (f" ± {g['interval']:.1%} (mean of {glass['daemon_pairs']} daemon pairs, 95%)"
                      if g.get("interval") else " (one daemon pair)")
            lines.append(f"- Looking Glass, {name} at 16 connections: on {g['on_rps']:,.0f}/s, off {g['off_rps']:,.0f}/s "
                         f"(medians); on slower by {g['difference']:.1%}{spread}.")
        counted = (glass.get("instructions") or {}).get(name)
        if counted:
            lines.append(f"- Looking Glass, {name}, instructions per served request (the whole daemon, valgrind): "
                         f"on {counted['on']:,.0f}, off {counted['off']:,.0f}: capture is {counted['share']:.1%} "
                         "of the work.")
    lines += ["", "### Targets", "", "| Target | Goal | Measured | Result |", "|---|---|---|---|"]
    for t in results.get("targets") or []:
        verdict = {True: "pass", False: "**miss**", None: "n/a"}[t["pass"]]
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']}{note} | {t['goal']} | {t['shown']} | {verdict} |")
    return "\n".join(lines) + "\n"


def _rate(rps: float) -> str:
    return f"{rps:,.0f}" if rps >= 100 else f"{rps:.1f}" if rps >= 1 else f"{rps:.2f}"


def _table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| Operation | conns | scimd req/s | p50 ms | p99 ms | ceiling req/s | scimd/ceiling | peer req/s | "
           "peer/ceiling | scimd/peer |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s, c, p = r["scimd"], r["ceiling"], r.get("peer")
        errors = f" ({s['errors']} errors)" if s["errors"] else ""
        peer_errors = f" ({p['errors']} errors)" if p and p["errors"] else ""
        peer_errors += " †" if p and p.get("tool") == "burst" else ""
        out.append(
            f"| `{r['label']}`{errors} | {r['connections']} | {_rate(s['rps'])} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
            f"{_rate(c['rps'])} | {_fmt(r['ratio'], 3 if (r['ratio'] or 1) < 0.1 else 2)} | "
            + (f"{_rate(p['rps'])}{peer_errors} | {_fmt(r['peer_ratio'], 3)} | {_fmt(r['vs_peer'], 1)}x |" if p
               else "- | - | - |"))
    return out


def chart(results: dict[str, Any], path: Path) -> bool:
    """Throughput as a fraction of the ceiling per operation at 16 connections, scimd beside the peer."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results.get("operations") or [] if r["connections"] == MAIN_CONNECTIONS]
    if not rows:
        return False
    labels = [r["label"].replace(" add/remove 1 member", "\nadd/remove 1 member") for r in rows]
    ours = [r["ratio"] or 0 for r in rows]
    theirs = [r["peer_ratio"] or 0 for r in rows]
    fig, ax = plt.subplots(figsize=(11, 0.62 * len(rows) + 1.8))
    y = list(range(len(rows)))
    ax.barh([v - 0.2 for v in y], ours, height=0.38, label="scimd", color="#2b6cb0")
    ax.barh([v + 0.2 for v in y], theirs, height=0.38, label=f"scim2-server {(results.get('peer') or {}).get('version') or ''}",
            color="#dd6b20")
    for v, value, other in zip(y, ours, theirs):
        ax.text(value + 0.01, v - 0.2, f"{value:.2f}", va="center", fontsize=8)
        ax.text(other + 0.01, v + 0.2, f"{other:.3f}" if other < 0.1 else f"{other:.2f}", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("throughput / ceiling (same waitress server and threads, no work, same body size)")
    ax.set_title(f"scimd vs its ceiling and a peer: {results['users']:,} users, {MAIN_CONNECTIONS} connections, "
                 f"{results['machine']['cores']} cores")
    ax.axvline(1.0, color="#999", lw=0.8, ls="--")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(results: dict[str, Any], out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{name}.png"
    results["chart"] = png.name if chart(results, png) else None
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    md = markdown(results)
    if results["chart"]:
        md += f"\n![throughput as a fraction of the ceiling]({png.name})\n"
    md_path.write_text(md)
    return [json_path, md_path] + ([png] if results["chart"] else [])
