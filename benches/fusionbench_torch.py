"""The in-memory torch baseline: FusionBench's algorithms as FusionBench runs them — every model loaded with
transformers, state-dict arithmetic in float32 torch, ``save_pretrained`` at the end. Written here from
FusionBench's documented semantics (task arithmetic, simple average, TIES over the flattened model) so that
merge-rs can be timed against it on the same files.

    python benches/fusionbench_torch.py task_arithmetic --pretrained P --model M1 --model M2 ... --out DIR
"""

from __future__ import annotations

import argparse

import torch
from transformers import CLIPVisionModel


def load(path: str) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in CLIPVisionModel.from_pretrained(path).state_dict().items()}


def task_arithmetic(pre: dict, models: list[dict], scaling_factor: float) -> dict:
    total = None
    for m in models:
        tv = {k: m[k] - pre[k] for k in pre}
        total = tv if total is None else {k: total[k] + tv[k] for k in total}
    return {k: pre[k] + scaling_factor * total[k] for k in pre}


def simple_average(models: list[dict]) -> dict:
    total = {k: torch.zeros_like(v) for k, v in models[0].items()}
    for m in models:
        total = {k: total[k] + m[k] for k in total}
    return {k: v / len(models) for k, v in total.items()}


def ties(pre: dict, models: list[dict], scaling_factor: float, threshold: float) -> dict:
    keys = list(pre)
    flat_pre = torch.cat([pre[k].reshape(-1) for k in keys])
    tvs = torch.stack([torch.cat([m[k].reshape(-1) for k in keys]) - flat_pre for m in models])
    d = tvs.shape[1]
    k = d - int(d * threshold / 100)
    kth = tvs.abs().kthvalue(k, dim=1, keepdim=True).values
    tvs = tvs * (tvs.abs() >= kth)
    sign = torch.sign(tvs.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    keep = torch.where(sign.unsqueeze(0) > 0, tvs > 0, tvs < 0)
    merged = flat_pre + scaling_factor * (tvs * keep).sum(0)
    out, start = {}, 0
    for key in keys:
        n = pre[key].numel()
        out[key] = merged[start : start + n].reshape(pre[key].shape)
        start += n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("method", choices=["task_arithmetic", "simple_average", "ties"])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--scaling-factor", type=float, default=0.3)
    parser.add_argument("--threshold", type=float, default=20)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pre = load(args.pretrained)
    models = [load(m) for m in args.model]
    if args.method == "task_arithmetic":
        merged = task_arithmetic(pre, models, args.scaling_factor)
    elif args.method == "simple_average":
        merged = simple_average(models)
    else:
        merged = ties(pre, models, args.scaling_factor, args.threshold)
    model = CLIPVisionModel.from_pretrained(args.pretrained)
    model.load_state_dict(merged)
    model.save_pretrained(args.out)


if __name__ == "__main__":
    main()
