"""The portable build against the native one: the same merges, page cache warm, alternating between two installed
copies of merge-rs so that both see the same machine state (medians of REPS).

    .venv/bin/python benches/portable.py --native .venv/bin/python --portable /tmp/wheel-venv/bin/python

Wall times on a busy or small machine vary by ±10 % between identical runs; the user CPU time (the build's own
code, without the kernel's copies) is the steadier comparison. Each interpreter must import its own merge_rs (check with `PY -c "import merge_rs; print(merge_rs.__file__)"`).
Writes benches/portable.json and prints the markdown table docs/performance.md shows.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from workloads import DATA, Workload

HERE = Path(__file__).parent
RUNS = {"task arithmetic": ["task_arithmetic"], "TIES, global": ["ties"], "TIES, per-tensor": ["ties", "--trim",
                                                                                              "per-tensor"]}


def merge_seconds(python: str, method: list[str], pretrained: Path, models: list[Path], out: Path
                  ) -> tuple[float, float]:
    """(wall seconds, user CPU seconds) of one merge: the user time is what the build's code costs, without the
    kernel's copies and the machine's noise."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [python, "-m", "merge_rs.cli", "merge", *method, "--pretrained", str(pretrained), "--out", str(out),
           "--quiet", "--no-model-card"]
    for m in models:
        cmd += ["--model", str(m)]
    start, user = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    user = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - user
    shutil.rmtree(out, ignore_errors=True)
    return seconds, user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--native", required=True, help="an interpreter whose merge_rs is the native build")
    parser.add_argument("--portable", required=True, help="an interpreter whose merge_rs is the portable build")
    parser.add_argument("--preset", default="vit-l-14")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    pretrained, models = Workload(args.preset, 8).paths()
    out = DATA / "out-portable"
    builds = {"native": args.native, "portable": args.portable}
    times: dict[str, dict[str, list[tuple[float, float]]]] = {run: {b: [] for b in builds} for run in RUNS}
    for run, method in RUNS.items():
        for b, python in builds.items():  # warm-up: the page cache and both builds' code
            merge_seconds(python, method, pretrained, models, out)
        for _ in range(args.reps):
            for b, python in builds.items():
                times[run][b].append(merge_seconds(python, method, pretrained, models, out))
    rows = ["| run | native: wall, user CPU | portable: wall, user CPU | portable / native: wall, user CPU |",
            "| --- | --- | --- | --- |"]
    for run, by_build in times.items():
        medians = {b: [statistics.median(s[i] for s in by_build[b]) for i in (0, 1)] for b in builds}
        (nw, nu), (pw, pu) = medians["native"], medians["portable"]
        rows.append(f"| {run} | {nw:.2f} s, {nu:.2f} s | {pw:.2f} s, {pu:.2f} s | {pw / nw:.3f}, {pu / nu:.3f} |")
    print("\n".join(rows))
    result = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "preset": args.preset, "models": 8, "reps": args.reps, "seconds": times}
    (HERE / "portable.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {HERE / 'portable.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
