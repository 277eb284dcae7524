"""A recipe resolved for the engine, whatever its dialect: the merge-rs method, the inputs, and a function
giving each tensor's parameters. ``plan`` reads the models' headers (never their data) and groups the
tensors by their parameter values: the most common values are the request's, the others its tensor groups."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..api import inspect
from ..lora import is_adapter
from ..reports import CheckpointInfo
from .schema import Evaluation
from .settings import layer_of, layer_positions
from .source import RecipeSource

FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class MergeJob:
    """What a recipe asks for, in merge-rs's terms."""

    source: RecipeSource
    dialect: str
    method: str
    models: list[str]
    parameters_for: Callable[[str, float], dict[str, Any]]
    loras: list[str | None] = field(default_factory=list)  # per model: an adapter read over it (model+lora)
    slices: Any = None  # mergekit's slices: a mergekit_slices.Frankenmerge
    pretrained: str | None = None
    pretrained_lora: str | None = None  # an adapter read over the pretrained model (mergekit's base_model: m+lora)
    by_layer: bool = False
    layered: bool = True
    dtype: str | None = None
    max_shard_size: int | str = "5GB"
    out: str | None = None
    pool: Any = None
    evaluation: Evaluation | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class MergePlan:
    """The engine request a job becomes, and what a dry run shows."""

    job: MergeJob
    pretrained: Path | None
    models: list[Path]
    parameters: dict[str, Any]
    loras: list[Path | None]
    groups: list[tuple[list[str], dict[str, Any]]]
    inputs: list[CheckpointInfo]
    merged: list[str]
    views: list[list[tuple[str, Path, str]]] = field(default_factory=list)  # models assembled from tensors
    base_view: list[tuple[str, Path, str]] = field(default_factory=list)  # the pretrained model, assembled
    # Per view (and the base's): an adapter read over it, and the view's tensors it leaves alone (re-indexed ones)
    view_adapters: list[tuple[Path, list[str]] | None] = field(default_factory=list)
    base_view_adapter: tuple[Path, list[str]] | None = None
    config_updates: dict[str, Any] = field(default_factory=dict)
    # (Vocabulary, tensor names, headers, slice groups, adapter → model) when tokenizer_source re-indexes rows
    vocabulary: Any = None
    pretrained_lora: Path | None = None  # an adapter read over the pretrained model


def resolve_model(reference: str, source: RecipeSource, loc: tuple[Any, ...]) -> Path:
    """A model reference as a local path: a path that exists, or a hub id from the local hub cache (or the
    hub, when online). A missing model is an error naming the field."""
    path = Path(reference).expanduser()
    if not path.is_absolute() and not path.exists():
        beside = source.path.parent / path
        path = beside if beside.exists() else path
    if path.exists():
        return path
    if _HUB_ID.match(reference):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(reference, allow_patterns=["*.safetensors", "*.json", "*.txt"]))
        except Exception as e:  # noqa: BLE001 - any hub failure is "not found" for the user
            raise source.error(loc, f"model '{reference}' is neither a local path nor in the hub cache "
                                    f"({type(e).__name__})") from None
    raise source.error(loc, f"model '{reference}' does not exist")


def plan(job: MergeJob, pretrained: Path | None, models: list[Path], loras: list[Path | None] | None = None,
         model_infos: list[CheckpointInfo] | None = None, base_info: CheckpointInfo | None = None) -> MergePlan:
    """Read the headers and give every merged tensor its parameters, grouped. An adapter stands for the model it
    is read over (its own headers hold only its factors); ``model_infos`` gives the models' headers instead."""
    loras = loras or [None] * len(models)
    base_info = base_info or (inspect(pretrained) if pretrained else None)
    infos = model_infos if model_infos is not None else [_model_info(job, m, base_info) for m in models]
    inputs = [*([base_info] if base_info else []), *infos]
    reference = inputs[-len(models)]
    merged = [t.name for t in reference.tensors if t.dtype in FLOAT_DTYPES]
    if job.by_layer and not any(layer_of(n) is not None for n in merged):
        raise job.source.error(("parameters",), f"a layer gradient needs layers, and {reference.path} has no "
                                               "tensor with a layer index (name.N.…)")
    positions = layer_positions(merged) if job.layered else dict.fromkeys(merged, 0.0)
    by_values: dict[str, list[str]] = {}
    for name in merged:
        values = job.parameters_for(name, positions[name])
        by_values.setdefault(json.dumps(values, sort_keys=True), []).append(name)
    _check_values(job, [json.loads(key) for key in by_values] or [job.parameters_for("", 0.0)], len(models))
    if not by_values:
        return MergePlan(job, pretrained, models, job.parameters_for("", 0.0), loras, [], inputs, merged)
    common, _ = Counter({k: len(v) for k, v in by_values.items()}).most_common(1)[0]
    groups = [(names, json.loads(key)) for key, names in by_values.items() if key != common]
    return MergePlan(job, pretrained, models, json.loads(common), loras, groups, inputs, merged)


def _model_info(job: MergeJob, model: Path, base: CheckpointInfo | None) -> CheckpointInfo:
    if not is_adapter(model):
        return inspect(model)
    if base is None:
        raise job.source.error(("pretrained",), f"{model} is a LoRA adapter: give the model it adapts as the "
                                                "pretrained model")
    return base


def _check_values(job: MergeJob, value_sets: list[dict[str, Any]], models: int) -> None:
    """Each parameter value against the method's declaration (finite numbers, ranges, kinds), then each set
    through the engine's own checks for this many models: a dry run refuses what the merge would."""
    from .. import _core
    from ..exceptions import InvalidArgumentError
    from ..methods import get_method

    method = get_method(job.method)
    for values in value_sets:
        for name, value in values.items():
            param = method.parameter(name)
            problem = param.problem(value) if param is not None else None
            if problem:
                raise job.source.error(("parameters", name), f"expected {problem}, got {json.dumps(value)}")
        try:
            _core.check_method(job.method, json.dumps(values), models)
        except InvalidArgumentError as e:
            raise job.source.error(("parameters",), str(e)) from None
