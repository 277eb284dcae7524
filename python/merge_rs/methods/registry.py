"""The merge methods the Rust engine runs: names, defaults (FusionBench's), parameters and papers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from ..exceptions import InvalidArgumentError


@dataclass(frozen=True)
class Parameter:
    """One parameter of a method."""

    name: str
    default: Any
    help: str
    needs: str = ""  # non-empty: the parameter is required, and the error says the method needs this


SCALING = Parameter("scaling_factor", 0.3, "λ: θ = θ₀ + λ·(merged task vector)")
COEFFICIENTS = Parameter("coefficients", None, "one coefficient per model: θ = θ₀ + Σ cᵢτᵢ (task-wise weights)")
COEFFICIENTS_FILE = Parameter(
    "coefficients_file", None, "JSON file with one coefficient per model per tensor (layer-wise weights)"
)
THRESHOLD = Parameter("threshold", 20.0, "percentage of each task vector's entries kept (largest magnitudes)")
MERGE_FUNC = Parameter("merge_func", "sum", "how kept entries are combined: sum, mean or max")
TRIM = Parameter("trim", "global", "top-k over the whole model (global, FusionBench) or per tensor (mergekit)")
DROP_RATE = Parameter("drop_rate", 0.5, "probability of dropping each task-vector entry")
SEED = Parameter("seed", 0, "seed of the drop mask")
RESCALE = Parameter("rescale", True, "rescale kept entries by 1/(1 − drop rate)")


class MergeMethod:
    """A registered merge method: subclasses set the class attributes."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    needs_pretrained: ClassVar[bool] = True
    parameters: ClassVar[tuple[Parameter, ...]] = ()

    @classmethod
    def resolve(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The parameters to send to the engine: ``given`` over the defaults; unknown names are errors."""
        known = {p.name: p for p in cls.parameters}
        unknown = sorted(set(given) - set(known))
        if unknown:
            accepted = ", ".join(known) or "no parameters"
            raise InvalidArgumentError(f"{cls.name} does not take {', '.join(unknown)} (it takes {accepted})")
        resolved = {name: p.default for name, p in known.items() if p.default is not None}
        resolved.update({k: v for k, v in given.items() if v is not None})
        for p in cls.parameters:
            if p.needs and resolved.get(p.name) in (None, [], ()):
                raise InvalidArgumentError(f"{cls.name} needs {p.needs}")
        return cls.adjust(resolved, given)

    @classmethod
    def adjust(cls, resolved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """Method-specific reconciliation of parameters (hook)."""
        return resolved


class SimpleAverage(MergeMethod):
    name = "simple_average"
    summary = "mean of the fine-tuned models"
    paper = "https://arxiv.org/abs/2203.05482"
    needs_pretrained = False


class WeightedAverage(MergeMethod):
    name = "weighted_average"
    summary = "Σ wᵢθᵢ / Σ wᵢ"
    paper = "https://arxiv.org/abs/2203.05482"
    needs_pretrained = False
    parameters = (
        Parameter("weights", None, "one weight per model (required)", needs="weights (one per model)"),
        Parameter("normalize", True, "divide by the sum of the weights"),
    )


class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    summary = "θ₀ + λ Σ τᵢ, or per-task / per-tensor coefficients"
    paper = "https://arxiv.org/abs/2212.04089"
    parameters = (SCALING, COEFFICIENTS, COEFFICIENTS_FILE)

    @classmethod
    def adjust(cls, resolved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        chosen = [k for k in ("scaling_factor", "coefficients", "coefficients_file") if given.get(k) is not None]
        if len(chosen) > 1:
            raise InvalidArgumentError(f"task_arithmetic: give only one of {', '.join(chosen)}")
        if "coefficients" in chosen or "coefficients_file" in chosen:
            resolved.pop("scaling_factor", None)
        return resolved


class Ties(MergeMethod):
    name = "ties"
    summary = "trim to the top-k %, elect signs, disjoint merge"
    paper = "https://arxiv.org/abs/2306.01708"
    parameters = (SCALING, THRESHOLD, MERGE_FUNC, TRIM)


class Dare(MergeMethod):
    name = "dare"
    summary = "random drop and rescale of task vectors, then task arithmetic"
    paper = "https://arxiv.org/abs/2311.03099"
    parameters = (SCALING, DROP_RATE, SEED, RESCALE)


class DareTies(MergeMethod):
    name = "dare_ties"
    summary = "DARE on the task vectors, then TIES"
    paper = "https://arxiv.org/abs/2311.03099"
    parameters = (SCALING, THRESHOLD, MERGE_FUNC, TRIM, DROP_RATE, SEED, RESCALE)


class FisherMerging(MergeMethod):
    name = "fisher_merging"
    summary = "Σ cᵢ(Fᵢ+ε)θᵢ / Σ cᵢ(Fᵢ+ε) with diagonal Fisher checkpoints (merge-rs fisher computes them)"
    paper = "https://arxiv.org/abs/2111.09832"
    needs_pretrained = False
    parameters = (
        Parameter("fisher", None, "one diagonal-Fisher checkpoint per model, same tensor names (required)",
                  needs="the Fisher checkpoints (one per model)"),
        Parameter("weights", None, "cᵢ, one per model (default 1; merge-rs fisher folds in the norm normalisation)"),
        Parameter("epsilon", 1e-6, "ε added to every Fisher value (FusionBench's minimal_fisher_weight)"),
    )

    @classmethod
    def adjust(cls, resolved: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        resolved["fisher"] = [os.fspath(f) for f in resolved["fisher"]]
        return resolved


METHODS: dict[str, type[MergeMethod]] = {
    m.name: m for m in (SimpleAverage, WeightedAverage, TaskArithmetic, Ties, Dare, DareTies, FisherMerging)
}


def get_method(name: str) -> type[MergeMethod]:
    """The method called ``name`` (``-`` and ``_`` are interchangeable)."""
    key = name.replace("-", "_").lower()
    if key not in METHODS:
        raise InvalidArgumentError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[key]

