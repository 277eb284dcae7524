"""The subspace methods (Iso-C, Iso-CTS, TSV-M) on 8 × ViT-L/14 float32, merge-rs against the in-memory torch
implementation (benches/subspace_torch.py) side by side on the same cores: wall time and peak RSS of each
(`/usr/bin/time`, page cache warm), and how far apart the results are (the worst relative Frobenius error
over the matrices, of the merged weights θ and of the merged task vector θ − θ₀). Writes benches/SUBSPACE.md
and benches/subspace.json.

    .venv/bin/python benches/subspace.py [--methods iso_c,iso_cts,tsv_m] [--preset vit-l-14]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / ".data" / "out-subspace"
BIN = Path(sys.executable).parent


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of `cmd` under /usr/bin/time, after `sync`."""
    subprocess.run(["sync"], check=True)
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{result.stderr[-2000:]}")
    wall, rss = result.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss) / 1024


def errors(ours: Path, theirs: Path, pretrained: Path) -> tuple[float, float]:
    """Worst relative Frobenius error over the matrices: of θ, and of θ − θ₀."""
    import torch
    from safetensors import safe_open

    def tensor(path: Path, key: str) -> "torch.Tensor":
        files = sorted(path.glob("*.safetensors"))
        for f in files:
            with safe_open(str(f), "pt") as handle:
                if key in handle.keys():
                    return handle.get_tensor(key).double()
        raise KeyError(key)

    worst_theta = worst_delta = 0.0
    with safe_open(str(theirs / "model.safetensors"), "pt") as handle:
        keys = [k for k in handle.keys() if len(handle.get_slice(k).get_shape()) == 2]
    for key in keys:
        a, b, base = tensor(ours, key), tensor(theirs, key), tensor(pretrained, key)
        worst_theta = max(worst_theta, float((a - b).norm() / b.norm()))
        worst_delta = max(worst_delta, float((a - b).norm() / (b - base).norm()))
    return worst_theta, worst_delta


def write_report(name: str, rows: list[dict]) -> None:
    """benches/SUBSPACE.md from the rows."""
    lines = [f"# Subspace methods on {name}", "",
             "`.venv/bin/python benches/subspace.py` — merge-rs (streamed, float64 factorisations) against the in-memory "
             "torch implementation (float32 `torch.linalg.svd`, every task vector held), side by side on the same "
             "machine, page cache warm. Each row is one run on the day it names; compare within a row.",
             "", "| method | merge-rs (s) | merge-rs peak RSS (MB) | torch (s) | torch peak RSS (MB) | max rel. error θ "
             "| max rel. error θ − θ₀ | measured |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['merge_rs_s']:.0f} | {r['merge_rs_mb']:.0f} | {r['torch_s']:.0f} "
                     f"| {r['torch_mb']:.0f} | {r['error_theta']:.1e} | {r['error_task_vector']:.1e} | {r['measured']} |")
    (HERE / "SUBSPACE.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="iso_c,iso_cts,tsv_m")
    parser.add_argument("--preset", default="vit-l-14")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from workloads import Workload

    workload = Workload(args.preset, 8)
    pretrained, models = workload.paths()
    model_args = [a for m in models for a in ("--model", str(m))]
    OUT.mkdir(parents=True, exist_ok=True)
    results = HERE / "subspace.json"
    previous = json.loads(results.read_text()) if results.exists() else {}
    kept = {r["method"]: r for r in previous.get("rows", []) if previous.get("workload") == workload.name}
    rows = []
    for method in args.methods.split(","):
        ours, theirs = OUT / f"merge-rs-{method}", OUT / f"torch-{method}"
        wall, rss = timed([str(BIN / "merge-rs"), "merge", method, "--pretrained", str(pretrained), *model_args,
                           "--out", str(ours), "--overwrite", "--quiet"])
        t_wall, t_rss = timed([sys.executable, str(HERE / "subspace_torch.py"), method, "--pretrained",
                               str(pretrained), *model_args, "--out", str(theirs)])
        theta, delta = errors(ours, theirs, pretrained)
        rows.append({"method": method, "merge_rs_s": wall, "merge_rs_mb": rss, "torch_s": t_wall, "torch_mb": t_rss,
                     "error_theta": theta, "error_task_vector": delta, "measured": time.strftime("%Y-%m-%d")})
        print(rows[-1], flush=True)
    kept.update({r["method"]: r for r in rows})  # methods not run this time keep their last measurement
    rows = [kept[m] for m in sorted(kept)]
    results.write_text(json.dumps({"workload": workload.name, "rows": rows}, indent=1) + "\n")
    write_report(workload.name, rows)


if __name__ == "__main__":
    main()
