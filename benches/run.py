"""merge-rs benchmark: wall time and peak RSS of merge-rs, an in-memory torch implementation of FusionBench's
algorithms, and mergekit on the same files, side by side in one run with the page cache warm.

    make bench                      # the full run (ViT-L/14 ×8, variants, scaling, peers): ~30 minutes
    .venv/bin/python benches/run.py --quick    # ViT-B/32 only, a few minutes

Writes benches/RESULTS.md, benches/results.json and benches/results.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from workloads import DATA, Workload

HERE = Path(__file__).parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
MERGEKIT_VENV = DATA / "venv-mergekit"
MERGEKIT_VERSION = "0.1.5"
OUT = DATA / "out"
TORCH_TIES_NOTE = (
    "not run: extrapolated from 17.4 GB on ViT-B/32 (3.5× fewer parameters), the flattened global TIES "
    "would need ~60 GB; see the ViT-B/32 × 8 row"
)

METHOD_ARGS = {
    "task_arithmetic": ["task_arithmetic"],
    "ties": ["ties"],
    "ties_per_tensor": ["ties", "--trim", "per-tensor"],
    "simple_average": ["simple_average"],
    "dare": ["dare"],
}


@dataclass
class Result:
    """Repeated measurements of one command."""

    workload: str
    tool: str
    run: str
    walls: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def rss(self) -> float:
        return max(self.rss_mb) if self.rss_mb else float("nan")


def timed(cmd: list[str], shell: bool = False) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one run under /usr/bin/time, after flushing dirty pages."""
    subprocess.run(["sync"], check=True)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        prefix = ["/usr/bin/time", "-o", t.name, "-f", "%e %M"]
        full = prefix + (["sh", "-c", cmd[0], "sh", *cmd[1:]] if shell else cmd)
        proc = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))[:300]} failed:\n{proc.stderr[-2000:]}")
        wall, rss_kb = t.read().split()[-2:]
    return float(wall), float(rss_kb) / 1024


def repeat(result: Result, cmd: list[str], reps: int, shell: bool = False, out: Path | None = None,
           warmup: bool = False) -> Result:
    """``reps`` timed runs of ``cmd``, after one untimed run if ``warmup`` (the first run after another workload was
    often the slowest by far: 3.2 s against 1.4–1.5 s for task arithmetic on 8 × ViT-L/14)."""
    for rep in range(reps + warmup):
        if out is not None and out.exists():
            shutil.rmtree(out)
        wall, rss = timed(cmd, shell)
        if warmup and rep == 0:
            continue
        result.walls.append(wall)
        result.rss_mb.append(rss)
        print(f"  {result.workload:28} {result.tool:9} {result.run:22} {wall:8.2f} s {rss:9.0f} MB", flush=True)
    if out is not None and out.exists():
        shutil.rmtree(out)
    return result


def floors(w: Workload, count: int | None, reps: int) -> list[Result]:
    files = [str(f) for f in w.files(count)]
    half = len(files) // 2
    one = repeat(Result(w.name, "cat", "read all inputs"), ['cat "$@" > /dev/null', *files], reps, shell=True,
                 warmup=True)
    two_cmd = f'cat {" ".join(files[:half])} > /dev/null & cat {" ".join(files[half:])} > /dev/null; wait'
    two = repeat(Result(w.name, "cat", "read all inputs, 2 readers"), [two_cmd], reps, shell=True, warmup=True)
    return [one, two]


def merge_rs(w: Workload, run: str, reps: int, count: int | None = None, label: str | None = None) -> Result:
    pretrained, models = w.paths(count)
    out = OUT / f"merge-rs-{run}"
    cmd = [str(VENV_BIN / "merge-rs"), "merge", *METHOD_ARGS[run], "--pretrained", str(pretrained),
           *[a for m in models for a in ("--model", str(m))], "--out", str(out), "--quiet"]
    return repeat(Result(label or w.name, "merge-rs", run), cmd, reps, out=out, warmup=True)


def torch_baseline(w: Workload, run: str, reps: int, count: int | None = None, label: str | None = None) -> Result:
    pretrained, models = w.paths(count)
    out = OUT / f"torch-{run}"
    cmd = [sys.executable, str(HERE / "fusionbench_torch.py"), run, "--pretrained", str(pretrained),
           *[a for m in models for a in ("--model", str(m))], "--out", str(out)]
    return repeat(Result(label or w.name, "torch", run), cmd, reps, out=out)


def mergekit_install() -> Path | None:
    exe = MERGEKIT_VENV / "bin" / "mergekit-pytorch"
    if not exe.exists():
        print(f"installing mergekit {MERGEKIT_VERSION} into {MERGEKIT_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MERGEKIT_VENV)], check=True)
        pip = [str(MERGEKIT_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        if subprocess.run([*pip, f"mergekit=={MERGEKIT_VERSION}"]).returncode != 0:
            return None
    return exe


def mergekit(w: Workload, run: str, reps: int, exe: Path, count: int | None = None) -> Result:
    """mergekit-pytorch on the same single-file checkpoints: task_arithmetic, or ties with density 0.2 (its
    trim is per tensor), weight 0.3 per model and no normalisation, i.e. λ = 0.3 as in FusionBench."""
    pretrained, models = w.paths(count)
    method = {"task_arithmetic": "task_arithmetic", "ties_per_tensor": "ties"}[run]
    params = {"weight": 0.3} | ({"density": 0.2} if method == "ties" else {})
    config = {
        "merge_method": method,
        "base_model": str(pretrained / "model.safetensors"),
        "models": [{"model": str(m / "model.safetensors"), "parameters": params} for m in models],
        "parameters": {"normalize": False},
        "dtype": "float32",
    }
    config_path = OUT / f"mergekit-{run}.json"
    OUT.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config))  # YAML is a superset of JSON
    out = OUT / f"mergekit-{run}"
    return repeat(Result(w.name, "mergekit", run), [str(exe), str(config_path), str(out)], reps, out=out)


def startup(reps: int) -> Result:
    """CLI start-up: `merge-rs --help` minus a bare interpreter start."""
    bare = repeat(Result("-", "python", "python -c pass"), [sys.executable, "-c", "pass"], reps)
    cli = repeat(Result("-", "merge-rs", "merge-rs --help"), [str(VENV_BIN / "merge-rs"), "--help"], reps)
    cli.note = f"{cli.wall - bare.wall:.3f} s over a bare interpreter ({bare.wall:.3f} s)"
    return cli


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 2**20
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Linux {platform.release()}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ViT-B/32 only, no variants")
    parser.add_argument("--reps", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--no-peers", action="store_true", help="merge-rs and the floor only")
    args = parser.parse_args()
    started = time.time()
    results: list[Result] = []
    small = Workload("vit-b-32", 16)
    main_set = small if args.quick else Workload("vit-l-14", 8)
    main_count = 8 if args.quick else None
    print(f"workload {main_set.name}: generating if needed ...", flush=True)
    results += floors(main_set, main_count, args.reps)
    for run in METHOD_ARGS:
        results.append(merge_rs(main_set, run, args.reps, main_count, label=main_set.name))
    if not args.no_peers:
        for run in ("task_arithmetic", "simple_average"):
            results.append(torch_baseline(main_set, run, args.reps))
        if not args.quick:
            results.append(Result(main_set.name, "torch", "ties", note=TORCH_TIES_NOTE))
            label = "vit-b-32 × 8, global TIES vs torch"
            subprocess.run(["sh", "-c", 'cat "$@" > /dev/null', "sh", *map(str, small.files(8))], check=True)
            results.append(merge_rs(small, "ties", args.reps, 8, label=label))
        results.append(torch_baseline(small, "ties", args.reps, 8, label="vit-b-32 × 8, global TIES vs torch"))
        exe = mergekit_install()
        if exe is None:
            results.append(Result(main_set.name, "mergekit", "-", note="could not be installed"))
        else:
            for run in ("task_arithmetic", "ties_per_tensor"):
                results.append(mergekit(main_set, run, args.reps, exe, main_count))
    variants = [] if args.quick else [Workload("vit-l-14", 8, "bfloat16"), Workload("vit-l-14", 8, shard_size="500MB")]
    for w in variants:
        print(f"workload {w.name}: generating if needed ...", flush=True)
        results += floors(w, None, args.reps)
        for run in ("task_arithmetic", "ties"):
            results.append(merge_rs(w, run, args.reps))
        shutil.rmtree(w.directory)  # free the disk for the next set
    scaling = [(Workload("vit-b-32", 16), (2, 4, 8, 16))]
    if not args.quick:
        scaling.append((Workload("vit-l-14", 8), (2, 4, 8)))
    for w, counts in scaling:
        for count in counts:
            subprocess.run(["sh", "-c", 'cat "$@" > /dev/null', "sh", *map(str, w.files(count))], check=True)
            for run in ("task_arithmetic", "ties"):
                results.append(merge_rs(w, run, args.reps, count, label=f"{w.preset} × {count}"))
    results.append(startup(max(args.reps, 5)))
    from report import write_report

    write_report(results, machine(), " ".join(["python benches/run.py", *sys.argv[1:]]), time.time() - started)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
