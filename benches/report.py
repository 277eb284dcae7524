"""Writing a benchmark run's results: benches/RESULTS.md (tables, the targets checked), results.json and
results.png (wall time and peak RSS per run). Run on its own, it rebuilds RESULTS.md and the chart from
results.json:

    .venv/bin/python benches/report.py
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PEER_OF = {  # which peer run each merge-rs run is compared with
    "task_arithmetic": ["task_arithmetic"],
    "simple_average": ["simple_average"],
    "ties": ["ties", "ties_per_tensor"],
    "ties_per_tensor": ["ties_per_tensor"],
}


def fmt(x: float, unit: str = "", digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}{unit}"


def write_report(results: list[Any], machine: str, command: str, seconds: float) -> None:
    workloads = list(dict.fromkeys(r.workload for r in results if r.workload != "-"))
    lines = [
        "# merge-rs benchmark results",
        "",
        f"Machine: {machine}.  ",
        f"Command: `{command}` ({seconds / 60:.0f} minutes).  ",
        "Every figure is the median wall time of the runs listed and the largest peak RSS among them "
        "(`/usr/bin/time`, mapped file pages included), page cache warm, `sync` before each run; merge-rs and "
        "`cat` get one untimed run first (the peers, at seconds to minutes a run, do not). "
        "The floor is reading every input once (`cat` to /dev/null; one reader, and two in parallel).",
        "",
    ]
    for w in workloads:
        lines += workload_table(w, [r for r in results if r.workload == w])
    lines += targets(results)
    start = [r for r in results if r.workload == "-" and r.tool == "merge-rs"]
    if start:
        lines += ["", f"CLI start-up: `merge-rs --help` takes {fmt(start[0].wall, ' s', 3)}, {start[0].note}."]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n" + small_machine_section())
    (HERE / "results.json").write_text(json.dumps(
        {"machine": machine, "command": command, "seconds": seconds,
         "results": [asdict(r) | {"wall": r.wall, "rss": r.rss} for r in results]},
        indent=1))
    chart(results, workloads[0])
    print("\n".join(lines))


def small_machine_section() -> str:
    """The small-machine section of the current RESULTS.md (``small_machine.py`` writes it), so that a warm run
    keeps it."""
    from small_machine import SECTION

    path = HERE / "RESULTS.md"
    current = path.read_text() if path.exists() else ""
    return "\n" + current[current.index(SECTION):] if SECTION in current else ""


def workload_table(workload: str, rows: list[Any]) -> list[str]:
    floor = next((r.wall for r in rows if r.run == "read all inputs"), math.nan)
    floor2 = next((r.wall for r in rows if r.run == "read all inputs, 2 readers"), math.nan)
    peers = {(r.tool, r.run): r for r in rows if r.tool in ("torch", "mergekit")}
    out = [f"## {workload}", "", "| tool | run | wall (s) | runs (s) | peak RSS (MB) | × floor (1 / 2 readers) | speed-up vs torch | vs mergekit |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        runs = ", ".join(f"{w:.2f}" for w in r.walls) or r.note
        ratio = f"{fmt(r.wall / floor, '×', 1)} / {fmt(r.wall / floor2, '×', 1)}" if r.tool != "cat" else ""
        vs = {}
        for peer in ("torch", "mergekit"):
            match = next((peers[(peer, p)] for p in PEER_OF.get(r.run, []) if (peer, p) in peers), None)
            vs[peer] = f"{match.wall / r.wall:.1f}× ({match.run})" if r.tool == "merge-rs" and match and match.walls else ""
        rss = fmt(r.rss, "", 0) if r.tool != "cat" else ""
        out.append(f"| {r.tool} | {r.run} | {fmt(r.wall)} | {runs} | {rss} | {ratio} | {vs['torch']} | {vs['mergekit']} |")
    return out + [""]


def targets(results: list[Any]) -> list[str]:
    main = results[0].workload
    rows = {(r.tool, r.run): r for r in results if r.workload == main}
    floor = rows.get(("cat", "read all inputs"))
    get = lambda tool, run: rows.get((tool, run))  # noqa: E731
    checks = []

    def check(name: str, value: float, limit: float, unit: str, at_most: bool = True) -> None:
        ok = value <= limit if at_most else value >= limit
        checks.append(f"| {name} | {'≤' if at_most else '≥'} {limit:g}{unit} | {fmt(value, unit)} | {'yes' if ok else 'NO'} |")

    ta, ties = get("merge-rs", "task_arithmetic"), get("merge-rs", "ties")
    if floor and ta and ties:
        check("task arithmetic / floor", ta.wall / floor.wall, 2, "×")
        check("TIES (global) / floor", ties.wall / floor.wall, 5, "×")
    ours = [r for r in results if r.tool == "merge-rs" and r.workload == main]
    if ours:
        check("peak RSS, every merge-rs method", max(r.rss for r in ours), 256, " MB")
    mk_ta, mk_ties = get("mergekit", "task_arithmetic"), get("mergekit", "ties_per_tensor")
    if ta and mk_ta and mk_ta.walls:
        check("speed-up over mergekit, task arithmetic", mk_ta.wall / ta.wall, 10, "×", at_most=False)
    if ties and mk_ties and mk_ties.walls:
        check("speed-up over mergekit, TIES", mk_ties.wall / ties.wall, 50, "×", at_most=False)
    start = next((r for r in results if r.workload == "-" and r.tool == "merge-rs"), None)
    bare = next((r for r in results if r.workload == "-" and r.tool == "python"), None)
    if start and bare:
        check("CLI start-up over a bare interpreter", start.wall - bare.wall, 0.3, " s")
    return [f"## Targets ({main})", "", "| target | limit | measured | met |", "| --- | --- | --- | --- |", *checks]


def chart(results: list[Any], workload: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.workload == workload and r.walls]
    labels = [f"{r.tool}\n{r.run}" for r in rows]
    colors = {"cat": "#999999", "merge-rs": "#d95f02", "torch": "#1b9e77", "mergekit": "#7570b3"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, values, title in ((a, [r.wall for r in rows], "wall time (s, log)"),
                              (b, [r.rss for r in rows], "peak RSS (MB, log)")):
        ax.barh(range(len(rows)), values, color=[colors.get(r.tool, "#333333") for r in rows])
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(title)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.3g}", va="center", fontsize=7)
    fig.suptitle(f"merge-rs vs peers — {workload}")
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=110)


def main() -> None:
    """Rebuild the report from results.json."""
    from run import Result

    data = json.loads((HERE / "results.json").read_text())
    fields = ("workload", "tool", "run", "walls", "rss_mb", "note")
    results = [Result(**{k: r[k] for k in fields}) for r in data["results"]]
    write_report(results, data["machine"], data["command"], data.get("seconds", 0.0))


if __name__ == "__main__":
    main()
