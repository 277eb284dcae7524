"""The small-machine benchmark: every tool inside a memory cgroup whose limit counts the page cache, inputs evicted
from the cache first (a cold read from disk), on 8 × ViT-L/14 float32 + pretrained (10.9 GB). The floor is ``cat``
of all inputs in the same cgroup. Writes benches/small_machine.json and its section of benches/RESULTS.md.

    .venv/bin/python benches/small_machine.py                       # 256 MB and 1 GB, 3 runs each (~15 minutes)
    .venv/bin/python benches/small_machine.py --limits 256M --reps 1 --no-peers
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from cgroup import LimitedRun, run_limited
from workloads import DATA, Workload

HERE = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent
OUT = DATA / "out-small"
RUNS = {
    "task_arithmetic": ["task_arithmetic"],
    "ties": ["ties"],
    "ties_per_tensor": ["ties", "--trim", "per-tensor"],
}
TIMEOUT = 240  # seconds: 20-60× the cold floor; a tool still running then is thrashing
SECTION = "## Small machine: memory cgroup counting the page cache, inputs evicted (cold)"


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def measure(name: str, cmd: list[str], limit: int, inputs: list[Path], reps: int, shell: bool = False,
            out: Path | None = None) -> dict:
    runs: list[LimitedRun] = []
    for _ in range(reps):
        if out is not None and out.exists():
            shutil.rmtree(out)
        run = run_limited(cmd, limit, inputs, shell=shell, timeout=TIMEOUT)
        runs.append(run)
        print(f"  {limit >> 20:6} MB  {name:34} {describe(run):>24} {run.rss_mb:8.0f} MB", flush=True)
        if run.killed or run.timed_out:
            break
    if out is not None and out.exists():
        shutil.rmtree(out)
    failed = next((describe(r) for r in runs if r.killed or r.timed_out), None)
    return {"name": name, "limit_mb": limit >> 20, "failed": failed, "walls": [r.wall for r in runs],
            "wall": None if failed else statistics.median(r.wall for r in runs),
            "rss_mb": max((r.rss_mb for r in runs if r.rss_mb == r.rss_mb), default=float("nan"))}


def describe(run: LimitedRun) -> str:
    if run.killed:
        return "killed (OOM)"
    if run.timed_out:
        return f"stopped after {run.wall:.0f} s"
    return f"{run.wall:.2f} s"


def merge_rs_cmd(run: str, pretrained: Path, models: list[Path], out: Path) -> list[str]:
    return [str(VENV_BIN / "merge-rs"), "merge", *RUNS[run], "--pretrained", str(pretrained),
            *[a for m in models for a in ("--model", str(m))], "--out", str(out), "--quiet"]


def peers(limit: int, pretrained: Path, models: list[Path], inputs: list[Path], reps: int) -> list[dict]:
    results = []
    torch_cmd = [sys.executable, str(HERE / "fusionbench_torch.py"), "task_arithmetic", "--pretrained",
                 str(pretrained), *[a for m in models for a in ("--model", str(m))], "--out", str(OUT / "torch")]
    results.append(measure("torch (in memory) task_arithmetic", torch_cmd, limit, inputs, reps, out=OUT / "torch"))
    exe = DATA / "venv-mergekit" / "bin" / "mergekit-pytorch"
    if exe.exists():
        config = {"merge_method": "task_arithmetic", "base_model": str(pretrained / "model.safetensors"),
                  "models": [{"model": str(m / "model.safetensors"), "parameters": {"weight": 0.3}} for m in models],
                  "parameters": {"normalize": False}, "dtype": "float32"}
        path = OUT / "mergekit.json"
        path.write_text(json.dumps(config))
        cmd = [str(exe), str(path), str(OUT / "mergekit")]
        results.append(measure("mergekit task_arithmetic", cmd, limit, inputs, reps, out=OUT / "mergekit"))
    return results


def table(results: list[dict]) -> str:
    lines = [SECTION, "", "| memory limit | run | wall (median) | × cold floor | peak RSS |", "| --- | --- | --- | --- | --- |"]
    for limit in sorted({r["limit_mb"] for r in results}):
        rows = [r for r in results if r["limit_mb"] == limit]
        floor = next(r["wall"] for r in rows if r["name"].startswith("cat"))
        for r in rows:
            wall = r["failed"] or f"{r['wall']:.2f} s"
            ratio = "" if r["failed"] or r["name"].startswith("cat") else f"{r['wall'] / floor:.2f}×"
            rss = f"{r['rss_mb']:.0f} MB" if r["rss_mb"] == r["rss_mb"] else "–"
            lines.append(f"| {limit} MB | {r['name']} | {wall} | {ratio} | {rss} |")
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace the section in RESULTS.md (up to the next ``## `` heading), or append it."""
    path = HERE / "RESULTS.md"
    current = path.read_text() if path.exists() else ""
    if SECTION not in current:
        path.write_text((current.rstrip() + "\n\n" if current else "") + text)
        return
    head, rest = current.split(SECTION, 1)
    tail = rest[rest.index("\n## "):] if "\n## " in rest else ""
    path.write_text(head + text.rstrip("\n") + "\n" + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", default="256M,1G", help="comma-separated memory limits")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"merge-rs runs among {', '.join(RUNS)}")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args()
    workload = Workload("vit-l-14", 8)
    pretrained, models = workload.paths()
    inputs = workload.files()
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for limit in map(parse_size, args.limits.split(",")):
        results.append(measure("cat (the cold floor)", ['cat "$@" > /dev/null', "sh", *map(str, inputs)],
                               limit, inputs, args.reps, shell=True))
        for run in args.runs.split(","):
            out = OUT / f"merge-rs-{run}"
            cmd = merge_rs_cmd(run, pretrained, models, out)
            results.append(measure(f"merge-rs {run}", cmd, limit, inputs, args.reps, out=out))
        if not args.no_peers:
            results += peers(limit, pretrained, models, inputs, args.reps)
    (HERE / "small_machine.json").write_text(json.dumps(results, indent=1) + "\n")
    text = table(results)
    print(text)
    write_section(text)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
