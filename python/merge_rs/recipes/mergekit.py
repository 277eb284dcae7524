"""mergekit configs as they are, with mergekit's semantics: mergekit-yaml's schema (HF models; gradients over
the layer index) and mergekit-pytorch's (raw checkpoint files; no layers, so a gradient takes its first
value). Per-model parameters fall back to the global ones, then to mergekit's defaults; ``ties`` normalises
by default and ``lambda`` is 1. The task-arithmetic family runs as merge-rs's ``generalized_task_arithmetic``
with mergekit's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .job import MergeJob
from .mergekit_methods import DTYPES, TRANSLATORS, translator
from .mergekit_modules import AT, flatten_modules
from .mergekit_tokenizer import tokenizer_settings
from .settings import Conditional, Gradient, scoped, varies_by_layer
from .source import RecipeSource

FIELDS = {"merge_method", "models", "base_model", "parameters", "dtype", "out_dtype", "slices"}
NO_WEIGHTS = {"chat_template"}


def is_mergekit(data: dict[str, Any]) -> bool:
    return "merge_method" in data


def job_from_mergekit(source: RecipeSource) -> MergeJob:
    module_parameters = None
    if "modules" in source.data:
        source, module_parameters = flatten_modules(source)
    data = source.data
    warnings = _check_fields(source)
    shared = scoped(_settings(source, module_parameters, (*AT, "parameters")),
                     _settings(source, data.get("parameters"), ("parameters",)))
    if "slices" in data:
        return _job_from_slices(source, shared, warnings)
    method = data["merge_method"]
    if method not in TRANSLATORS:
        raise source.error(("merge_method",), f"merge-rs does not run mergekit's '{method}' (it runs: "
                                              f"{', '.join(sorted(TRANSLATORS))})")
    base = _base(source)
    entries = data.get("models")
    if not isinstance(entries, list) or not entries:
        raise source.error(("models",), "give the models to merge as a list of {model: ..., parameters: ...}")
    models, model_settings, positions, base_entry = [], [], [], None
    for i, entry in enumerate(entries):
        ref = reference(source, entry.get("model") if isinstance(entry, dict) else entry, ("models", i, "model"))
        if isinstance(entry, dict) and set(entry) - {"model", "parameters"}:
            extra = sorted(set(entry) - {"model", "parameters"})[0]
            raise source.error(("models", i, extra), "unknown field")
        raw = entry.get("parameters") if isinstance(entry, dict) else None
        settings = _settings(source, raw, ("models", i, "parameters"))
        if ref == base:
            base_entry = (i, settings)
        else:
            models.append(ref)
            model_settings.append(settings)
            positions.append(i)
    raw_files = all(Path(m).suffix in (".safetensors", ".bin", ".pt", ".pth") for m in [*models, base] if m)
    translate = translator(source, method, base, models, shared, model_settings, positions, base_entry)
    dtype = translate.written_dtype()
    all_values = [*shared.values(), *(s for m in model_settings for s in m.values())]
    pretrained, inputs = translate.inputs
    split = [split_lora(ref) for ref in inputs]
    base_model, base_lora = split_lora(pretrained) if pretrained else (None, None)
    return MergeJob(source=source, dialect="mergekit-pytorch" if raw_files else "mergekit-yaml",
                    method=translate.method, models=[m for m, _ in split], loras=[a for _, a in split],
                    parameters_for=translate.parameters,
                    pretrained=base_model, pretrained_lora=base_lora,
                    by_layer=not raw_files and any(varies_by_layer(s) for s in all_values), layered=not raw_files,
                    dtype=dtype,
                    warnings=[*warnings, *translate.warnings])


def _job_from_slices(source: RecipeSource, shared: dict[str, Any], warnings: list[str]) -> MergeJob:
    """mergekit's slices: each source position becomes one model assembled from its sources' layers, and each
    slice's tensors take that slice's parameters (see ``mergekit_slices``)."""
    from .mergekit_slices import Frankenmerge, parse_slices

    data = source.data
    method = data["merge_method"]
    if method not in TRANSLATORS:
        raise source.error(("merge_method",), f"merge-rs does not run mergekit's '{method}'")
    if "models" in data:
        raise source.error(("models",), "a config with slices takes its models from the slices")
    base = _base(source, slices=True)
    slices = parse_slices(source, shared, lambda raw, loc: _settings(source, raw, loc), method != "passthrough")
    warnings += [f"slices.{i}.residual_weight is ignored: mergekit 0.1.5 reads it but never uses it"
                 for i, piece in enumerate(data["slices"]) if "residual_weight" in piece]
    translators: list[Any] = []
    for piece in slices:
        own = reference(source, piece.base_model, (*piece.loc, "base_model")) if piece.base_model else None
        slice_base = own or base
        if slice_base is not None and slice_base not in [s.model for s in piece.sources]:
            where = (*piece.loc, "base_model") if own else ("base_model",)
            raise source.error(where, "with slices, a base model must be one of the slice's sources")
        others = [(j, s) for j, s in enumerate(piece.sources) if s.model != slice_base]
        base_entry = next(((j, s.settings) for j, s in enumerate(piece.sources) if s.model == slice_base), None)
        translate = translator(source, method, slice_base, [s.model for _, s in others], piece.settings,
                               [s.settings for _, s in others], [j for j, _ in others], base_entry)
        warnings += [w for w in translate.warnings if w not in warnings]
        translators.append(translate)
    if any((t.inputs[0] is None, len(t.inputs[1]), t.method) != (translators[0].inputs[0] is None,
                                                                  len(translators[0].inputs[1]), translators[0].method)
           for t in translators):
        raise source.error(("slices",), "merge-rs needs a base model in every slice or in none (each slice's "
                                        "base_model, else the config's)")
    # Where each input sits among each slice's sources (every slice lists as many; passthrough one).
    at = [{s.model: j for j, s in enumerate(piece.sources)} for piece in slices]
    bases = [at[s][t.inputs[0]] for s, t in enumerate(translators)] if translators[0].inputs[0] else None
    merge = Frankenmerge(slices, [t.parameters for t in translators], bases,
                         [[at[s][m] for m in t.inputs[1]] for s, t in enumerate(translators)])
    every = list(dict.fromkeys(s.model for piece in slices for s in piece.sources))
    return MergeJob(source=source, dialect="mergekit-yaml", method=translators[0].method, models=every,
                    parameters_for=merge.parameters_for, slices=merge,
                    dtype=translators[0].written_dtype(), warnings=warnings)


def _check_fields(source: RecipeSource) -> list[str]:
    warnings = []
    for key in source.data:
        if key in NO_WEIGHTS:
            warnings.append(f"{key} is ignored: it does not change the weights")
        elif key not in FIELDS and key not in ("tokenizer_source", "tokenizer"):  # checked once models are resolved
            raise source.error((key,), "unknown field in a mergekit config")
    for key in ("merge_method", "dtype", "out_dtype", "tokenizer_source"):
        value = source.data.get(key)
        if value is not None and not isinstance(value, str):
            raise source.error((key,), f"expected a name, not {type(value).__name__} {json.dumps(value)[:40]}")
    for key in ("dtype", "out_dtype"):
        if source.data.get(key) is not None and source.data[key] not in DTYPES:
            raise source.error((key,), f"unknown dtype '{source.data[key]}' (float32, float16 or bfloat16)")
    tokenizer_settings(source)
    return warnings


def reference(source: RecipeSource, ref: Any, loc: tuple[Any, ...]) -> str:
    if isinstance(ref, dict) and isinstance(ref.get("path"), str) and set(ref) <= {"path"}:
        ref = ref["path"]
    if not isinstance(ref, str) or not ref:
        raise source.error(loc, "a model is a path or a hub id")
    return ref


def _base(source: RecipeSource, slices: bool = False) -> str | None:
    """base_model, if given (``model+lora``: an adapter over it, read as mergekit reads it; not with slices)."""
    if not source.data.get("base_model"):
        return None
    base = reference(source, source.data["base_model"], ("base_model",))
    if slices and split_lora(base)[1] is not None:
        raise source.error(("base_model",), "merge-rs does not read a LoRA adapter over the base model of a "
                                            "config with slices yet")
    return base


def split_lora(ref: str) -> tuple[str, str | None]:
    """mergekit's ``model+lora`` as (model, adapter); a path that exists is taken whole."""
    if "+" not in ref or Path(ref).exists():
        return ref, None
    model, lora = ref.split("+", 1)
    return model, lora


def _settings(source: RecipeSource, raw: Any, loc: tuple[Any, ...]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise source.error(loc, "parameters are a mapping of name: value")
    return {name: _setting(source, value, (*loc, name)) for name, value in raw.items()}


def _setting(source: RecipeSource, value: Any, loc: tuple[Any, ...]) -> Any:
    """mergekit's ParameterSetting: a scalar, a gradient (list of scalars), or {value, filter} conditions."""
    scalar = (bool, int, float, str)
    if isinstance(value, scalar):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, scalar) for v in value):
        return Gradient(tuple(value))
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        conditions = []
        for i, cond in enumerate(value):
            if "value" not in cond or set(cond) - {"value", "filter"}:
                raise source.error((*loc, i), "a condition is {value: ..., filter: ...}")
            conditions.append(Conditional(_setting(source, cond["value"], (*loc, i, "value")), cond.get("filter")))
        return conditions
    raise source.error(loc, "a value is a number, a list of numbers (a gradient) or {value, filter} conditions")
