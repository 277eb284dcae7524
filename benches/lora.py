"""LoRA benchmark: eight rank-16 PEFT adapters over the ViT-L/14 pretrained encoder (q, k, v, out_proj, fc1, fc2
of every layer), merged by merge-rs into a full model and into an adapter, side by side with merge-rs on eight full
fine-tuned checkpoints, and PEFT's own ties_svd beside merge-rs's (``peft_ties_svd.py``), page cache warm, medians
of ``--reps`` runs alternating between the commands.

    .venv/bin/python benches/lora.py --reps 3

Prints a markdown table and writes benches/lora.json (with ``--merges-only``, the four merges into a full model
alone, without PEFT or adapter outputs: benches/lora-merges.json). The adapters are random factors of PEFT's layout, generated
once under benches/.data/.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from run import OUT, Result, repeat
from workloads import DATA, Workload

HERE = Path(__file__).parent
TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"]


def make_adapters(pretrained: Path, count: int, rank: int) -> list[Path]:
    """``count`` PEFT adapters of rank ``rank`` over ``pretrained`` (random A and B, α = 2r)."""
    import merge_rs
    from safetensors.numpy import save_file

    root = DATA / f"vit-l-14-lora{rank}-{count}"
    paths = [root / f"adapter_{i:02d}" for i in range(1, count + 1)]
    if (root / ".complete").exists():
        return paths
    shapes = {t.name: t.shape for t in merge_rs.inspect(pretrained).tensors}
    modules = sorted(n.removesuffix(".weight") for n in shapes if n.endswith(".weight")
                     and any(n.endswith(f"{t}.weight") for t in TARGETS))
    for i, path in enumerate(paths):
        rng = np.random.default_rng(i)
        path.mkdir(parents=True, exist_ok=True)
        factors = {}
        for module in modules:
            rows, cols = shapes[f"{module}.weight"]
            factors[f"base_model.model.{module}.lora_A.weight"] = rng.normal(0, 0.01, (rank, cols)).astype(np.float32)
            factors[f"base_model.model.{module}.lora_B.weight"] = rng.normal(0, 0.01, (rows, rank)).astype(np.float32)
        save_file(factors, str(path / "adapter_model.safetensors"))
        config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": TARGETS,
                  "base_model_name_or_path": str(pretrained)}
        (path / "adapter_config.json").write_text(json.dumps(config))
    (root / ".complete").touch()
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--merges-only", action="store_true", help="skip PEFT and the adapter outputs (minutes)")
    args = parser.parse_args()
    started = time.perf_counter()
    pretrained, full = Workload("vit-l-14", 8).paths()
    adapters = make_adapters(pretrained, 8, args.rank)
    merge = [str(Path(sys.executable).parent / "merge-rs"), "merge"]
    out = OUT / "lora"

    def command(method: str, models: list[Path], *extra: str) -> list[str]:
        flags = [a for m in models for a in ("--model", str(m))]
        return [*merge, method, "--pretrained", str(pretrained), *flags, "--out", str(out), "--quiet", *extra]

    runs = {
        ("full ×8", "task arithmetic"): command("task_arithmetic", full),
        ("full ×8", "TIES"): command("ties", full),
        ("adapters ×8", "task arithmetic"): command("task_arithmetic", adapters),
        ("adapters ×8", "TIES"): command("ties", adapters),
        # PEFT's ties_svd at density 0.2 and equal weights, by PEFT itself and by merge-rs; the runs after PEFT's
        # (4 GB) start with part of the page cache evicted, so the long ones follow it.
        ("adapters ×8", f"PEFT add_weighted_adapter(ties_svd) → rank-{args.rank} adapter"): [
            sys.executable, str(HERE / "peft_ties_svd.py"), str(pretrained), *map(str, adapters), "--out", str(out),
            "--density", "0.2", "--rank", str(args.rank)],
        ("adapters ×8", f"ties_svd as PEFT computes it → rank-{args.rank} adapter"): command(
            "generalized_task_arithmetic", adapters, "--weights", ",".join(["1"] * len(adapters)), "--sparsification",
            "magnitude", "--density", "0.2", "--consensus", "sum", "--normalize", "--weigh", "after",
            "--out-format", "peft", "--rank", str(args.rank)),
        ("adapters ×8", f"TIES → rank-{args.rank} adapter"): command("ties", adapters, "--out-format", "peft",
                                                                    "--rank", str(args.rank)),
    }
    if args.merges_only:
        runs = {key: cmd for key, cmd in runs.items() if "adapter" not in key[1]}
    results = {key: Result(key[0], "PEFT" if "add_weighted" in key[1] else "merge-rs", key[1]) for key in runs}
    for rep in range(args.reps + 1):  # the first round warms the cache and is not counted
        for key, cmd in runs.items():
            if rep == 0:
                repeat(Result(*key[:1], "warm-up", key[1]), cmd, 1, out=out)
            else:
                repeat(results[key], cmd, 1, out=out)
    shutil.rmtree(out, ignore_errors=True)
    rows = [{"inputs": r.workload, "run": r.run, "wall_s": r.wall, "peak_rss_mb": r.rss, "walls": r.walls}
            for r in results.values()]
    (HERE / ("lora-merges.json" if args.merges_only else "lora.json")).write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
        "rank": args.rank, "reps": args.reps, "rows": rows, "seconds": round(time.perf_counter() - started, 1)},
        indent=2) + "\n")
    ta_full = results[("full ×8", "task arithmetic")].wall
    print("\n| inputs | run | wall (median) | × full-model task arithmetic | peak RSS |\n| --- | --- | --- | --- | --- |")
    for r in results.values():
        print(f"| {r.workload} | {r.run} | {r.wall:.2f} s | {r.wall / ta_full:.2f} | {r.rss:.0f} MB |")


if __name__ == "__main__":
    main()
