"""The in-memory torch baseline for the subspace methods, as FusionBench runs them: load θ₀, then each fine-tuned
model in turn, keeping its task vector (every task vector is held), and merge with the torch implementation in
tests/subspace_reference.py (torch.linalg.svd, float32, every core). Writes OUT/model.safetensors.

    python benches/subspace_torch.py iso_c --pretrained DIR --model DIR ... --out DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from subspace_reference import REFERENCES  # noqa: E402


def load(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("method", choices=sorted(REFERENCES))
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    with torch.no_grad():
        base = load(args.pretrained)
        floats = [k for k, v in base.items() if v.is_floating_point()]
        tvs = []
        for path in args.model:
            model = load(path)
            tvs.append({k: model[k] - base[k] for k in floats})
            del model
        merged = REFERENCES[args.method]({k: base[k] for k in floats}, tvs)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({**base, **{k: v.contiguous() for k, v in merged.items()}}, str(args.out / "model.safetensors"))
    print(f"{args.method}: {time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
