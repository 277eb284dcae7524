"""What an experiment measures on a trained zoo, all in memory with torch (the shipped zoo is measured by
``merge-rs demo``; these are the same methods at the demo's defaults, written against stacked task vectors):

- zero-shot accuracy of the pretrained model and of each fine-tuned model on its own task;
- task arithmetic over all tasks at several λ, TIES (top 20 %, elected signs, disjoint sum, λ 0.3) and layer-wise
  AdaMerging (one λ per task per tensor, entropy on unlabeled test images: init 0.3, Adam lr 1e-3, 16 images per
  task per step, the demo's 200 steps);
- each single task vector's accuracy on its own task as λ grows (the curve);
- the cross-task matrix: θ₀ + 0.3 τᵢ on task j, minus the pretrained model on j.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TA_LAMBDAS = (0.1, 0.2, 0.3, 0.4, 0.5)
CURVE_LAMBDAS = (0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0)
CROSS_LAMBDA = 0.3
TIES_KEEP = 0.2
ADAMERGING = {"steps": 200, "lr": 1e-3, "batch": 16, "init": 0.3}
EVAL_BATCH = 1000


@dataclass
class Bench:
    """The pretrained CLIP, each task's zero-shot head and test set, and the stacked task vectors."""

    clip: Any
    heads: dict[str, Any]
    tests: dict[str, tuple[Any, Any]]  # task -> (uint8 images, labels), on the device
    base: dict[str, Any]  # vision tower parameter name -> θ₀
    vectors: dict[str, Any]  # name -> [tasks, *shape] τ

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def logits(self, params: dict[str, Any], task: str, images: Any) -> Any:
        import torch.nn.functional as F
        from torch.func import functional_call

        from ..training import as_pixels

        out = functional_call(self.clip.vision_model, params, (), {"pixel_values": as_pixels(images)})
        emb = F.normalize(self.clip.visual_projection(out.pooler_output), dim=-1)
        return self.clip.logit_scale.exp() * emb @ self.heads[task].T

    def accuracy(self, params: dict[str, Any], task: str) -> float:
        import torch

        images, labels = self.tests[task]
        correct = 0
        with torch.no_grad():
            for start in range(0, len(labels), EVAL_BATCH):
                logits = self.logits(params, task, images[start:start + EVAL_BATCH])
                correct += (logits.argmax(-1) == labels[start:start + EVAL_BATCH]).sum().item()
        return round(100 * correct / max(1, len(labels)), 2)

    def row(self, params: dict[str, Any]) -> dict[str, float]:
        return {task: self.accuracy(params, task) for task in self.tasks}

    def merged(self, lam: Any) -> dict[str, Any]:
        """θ₀ + Σᵢ λᵢτᵢ; ``lam`` is [tasks] or [tasks, tensors]."""
        out = {}
        for j, (name, tau) in enumerate(self.vectors.items()):
            weights = lam if lam.dim() == 1 else lam[:, j]
            out[name] = self.base[name] + (weights.view(-1, *[1] * (tau.dim() - 1)) * tau).sum(0)
        return out

    def single(self, i: int, lam: float) -> dict[str, Any]:
        return {name: self.base[name] + lam * tau[i] for name, tau in self.vectors.items()}


def task_arithmetic(bench: Bench) -> dict[str, dict[str, float]]:
    import torch

    n = len(bench.tasks)
    return {str(lam): bench.row(bench.merged(torch.full((n,), lam, device=_device(bench)))) for lam in TA_LAMBDAS}


def ties_params(bench: Bench, lam: float = 0.3, keep: float = TIES_KEEP) -> dict[str, Any]:
    """FusionBench's TIES: each flattened task vector trimmed to its top ``keep`` magnitudes over the whole model,
    signs elected by the trimmed sum (0 → the majority sign), agreeing entries summed, θ₀ + λ × that."""
    import torch

    flat = torch.cat([tau.flatten(1) for tau in bench.vectors.values()], dim=1)
    rank = flat.shape[1] - int(flat.shape[1] * keep)  # torch.kthvalue's 1-based rank, as FusionBench counts it
    threshold = flat.abs().kthvalue(max(rank, 1), dim=1, keepdim=True).values if rank else flat.abs().min() * 0
    trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
    sign = torch.sign(trimmed.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    merged = torch.where(torch.sign(trimmed) == sign, trimmed, torch.zeros_like(trimmed)).sum(0)
    params, offset = {}, 0
    for name, tau in bench.vectors.items():
        count = tau[0].numel()
        params[name] = bench.base[name] + lam * merged[offset:offset + count].view_as(tau[0])
        offset += count
    return params


def ties(bench: Bench) -> dict[str, float]:
    return bench.row(ties_params(bench))


def adamerging_layer_wise(bench: Bench, seed: int) -> tuple[dict[str, float], list[float]]:
    import torch

    settings = ADAMERGING
    lam = torch.full((len(bench.tasks), len(bench.vectors)), settings["init"], device=_device(bench),
                     requires_grad=True)
    optimizer = torch.optim.Adam([lam], lr=settings["lr"])
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(settings["steps"]):
        params = bench.merged(lam)
        loss = lam.sum() * 0
        for task in bench.tasks:
            images, _ = bench.tests[task]
            idx = torch.randint(len(images), (settings["batch"],), generator=generator).to(images.device)
            probs = bench.logits(params, task, images[idx]).softmax(-1)
            loss = loss + (-(probs * (probs + 1e-8).log()).sum(-1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 4))
    with torch.no_grad():
        return bench.row(bench.merged(lam.detach())), losses[::20] + losses[-1:]


def single_curves(bench: Bench) -> dict[str, dict[str, float]]:
    return {task: {str(lam): bench.accuracy(bench.single(i, lam), task) for lam in CURVE_LAMBDAS}
            for i, task in enumerate(bench.tasks)}


def cross_matrix(bench: Bench, pretrained: dict[str, float]) -> dict[str, dict[str, float]]:
    """``out[vector][task]``: accuracy of θ₀ + 0.3 τ_vector on task, minus the pretrained model's."""
    return {vec: {task: round(acc - pretrained[task], 2) for task, acc in bench.row(bench.single(i, CROSS_LAMBDA)).items()}
            for i, vec in enumerate(bench.tasks)}


def vector_norms(bench: Bench) -> dict[str, float]:
    """‖τᵢ‖ / ‖θ₀‖ over the vision tower."""
    import torch

    base = torch.sqrt(sum((p.float() ** 2).sum() for p in bench.base.values()))
    return {task: round((torch.sqrt(sum((tau[i] ** 2).sum() for tau in bench.vectors.values())) / base).item(), 4)
            for i, task in enumerate(bench.tasks)}


def _device(bench: Bench) -> Any:
    return next(iter(bench.base.values())).device
