"""PEFT's own ``add_weighted_adapter(..., combination_type="ties_svd")`` over LoRA adapters, for ``lora.py`` to time
beside merge-rs: the adapters are loaded onto a skeleton of the modules they adapt (``nn.Linear`` layers of the
pretrained model's names and shapes; ties_svd reads only the adapters), combined with equal weights, and the result
saved as an adapter.

    python benches/peft_ties_svd.py PRETRAINED ADAPTER... --out DIR [--density 0.2] [--rank 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def skeleton(pretrained: Path, modules: list[str]):
    """A module tree holding an ``nn.Linear`` at each dotted name of ``modules``, shaped as in ``pretrained``."""
    import merge_rs
    import torch

    shapes = {t.name: t.shape for t in merge_rs.inspect(pretrained).tensors}
    root = torch.nn.Module()
    for name in modules:
        parent = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        rows, cols = shapes[f"{name}.weight"]
        parent.add_module(leaf, torch.nn.Linear(cols, rows, bias=False, device="meta"))
    return root.to_empty(device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pretrained", type=Path)
    parser.add_argument("adapters", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--density", type=float, default=0.2)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    import peft
    from safetensors import safe_open

    with safe_open(str(args.adapters[0] / "adapter_model.safetensors"), "np") as f:
        modules = sorted({k.removeprefix("base_model.model.").split(".lora_")[0] for k in f.keys()})
    names = [f"a{i}" for i in range(len(args.adapters))]
    model = peft.PeftModel.from_pretrained(skeleton(args.pretrained, modules), args.adapters[0], adapter_name=names[0])
    for name, path in zip(names[1:], args.adapters[1:]):
        model.load_adapter(path, adapter_name=name)
    model.add_weighted_adapter(names, [1.0] * len(names), "merged", combination_type="ties_svd",
                               svd_rank=args.rank, density=args.density)
    model.save_pretrained(args.out, selected_adapters=["merged"])


if __name__ == "__main__":
    main()
