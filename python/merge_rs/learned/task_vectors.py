"""The pretrained vision encoder and the stacked task vectors τᵢ = θᵢ − θ₀ of a pool, one tensor per parameter,
loaded one fine-tuned model at a time (so at most θ₀, one θᵢ and the stack are resident)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..clip.pool import ModelPool


@dataclass
class TaskVectors:
    """``base[name]`` is θ₀ (float32); ``stacked[name]`` is [τ₁ … τₙ] along dim 0 in the chosen dtype."""

    encoder: Any  # the pretrained CLIPVisionModel, used as the module skeleton for functional calls
    base: dict[str, Any]
    stacked: dict[str, Any]
    tasks: list[str]

    @property
    def names(self) -> list[str]:
        return list(self.base)

    @classmethod
    def from_pool(cls, pool: ModelPool, dtype: str = "bfloat16", device: str = "cpu") -> "TaskVectors":
        import torch

        from ..clip.models import load_vision_encoder

        encoder = load_vision_encoder(pool.pretrained_path()).to(device)
        for p in encoder.parameters():
            p.requires_grad_(False)
        base = {n: p.detach() for n, p in encoder.named_parameters()}
        stacked = {n: torch.empty((len(pool.tasks), *p.shape), dtype=getattr(torch, dtype), device=device)
                   for n, p in base.items()}
        for i, task in enumerate(pool.tasks):
            params = dict(pool.load_vision(task).named_parameters())
            missing = sorted(set(base) - set(params))
            if missing:
                raise ValueError(f"the {task} model lacks {len(missing)} of the pretrained encoder's parameters, "
                                 f"e.g. {missing[0]}")
            for name, theta0 in base.items():
                stacked[name][i] = params[name].detach().to(device) - theta0
            del params
        return cls(encoder, base, stacked, list(pool.tasks))

    def merged(self, coefficients: Any) -> dict[str, Any]:
        """θ₀ + Σᵢ λᵢτᵢ per parameter; ``coefficients`` is [tasks] (task-wise) or [tasks, parameters]."""
        out = {}
        for j, name in enumerate(self.base):
            lam = coefficients if coefficients.dim() == 1 else coefficients[:, j]
            tau = self.stacked[name]
            out[name] = self.base[name] + (lam.view(-1, *[1] * (tau.dim() - 1)) * tau.float()).sum(dim=0)
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.stacked.values())
