"""merge-rs's own recipe (``method:`` …) checked field by field and turned into a :class:`MergeJob`."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from pydantic import ValidationError

from ..methods import METHODS, MethodInfo
from .job import MergeJob
from .schema import LayerGradient, ModelEntry, Recipe
from .settings import Gradient, evaluate, varies_by_layer
from .source import RecipeSource

PER_MODEL_KINDS = {"float_list", "float_or_list", "path_list"}


def validated(source: RecipeSource, model: type[Any]) -> Any:
    """``source.data`` as ``model``, or the deepest problem as ``FILE:LINE: field: message`` (where a value
    fits none of a union's forms, what each form wanted)."""
    try:
        return model.model_validate(source.data)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda x: (-len(x["loc"]), x["type"] != "extra_forbidden"))
        first = errors[0]
        loc = _field(first["loc"])
        if first["type"] == "extra_forbidden":
            raise source.error(loc, "unknown field") from None
        wanted = list(dict.fromkeys(x["msg"] for x in errors if _field(x["loc"]) == loc))
        raise source.error(loc, " or ".join(wanted[:3])) from None


def _field(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A pydantic location without the names of union branches (``str``, ``ModelEntry``, …)."""
    return tuple(k for k in loc if not (isinstance(k, str) and (k in _UNION_TAGS or k.startswith("list["))))


_UNION_TAGS = {"str", "bool", "int", "float", "ModelEntry", "LayerGradient"}


def job_from_recipe(source: RecipeSource) -> MergeJob:
    recipe: Recipe = validated(source, Recipe)
    method = METHODS.get(recipe.method.replace("-", "_").lower())
    if method is None:
        raise source.error(("method",), f"unknown method '{recipe.method}' (known: {', '.join(METHODS)})")
    base = {k: _setting(v) for k, v in recipe.parameters.items()}
    _check_names(source, method, base, ("parameters",))
    per_model = _per_model(source, method, recipe.models, base)
    overrides = []
    for i, override in enumerate(recipe.tensors):
        values = {k: _setting(v) for k, v in override.parameters.items()}
        _check_names(source, method, values, ("tensors", i, "parameters"))
        overrides.append((override.match, values))
    settings = [*base.values(), *(v for values in per_model.values() for v in values),
                *(v for _, values in overrides for v in values.values())]

    def parameters_for(tensor: str, t: float) -> dict[str, Any]:
        values = {k: evaluate(v, tensor, t) for k, v in base.items()}
        values.update({k: [evaluate(v, tensor, t) for v in vs] for k, vs in per_model.items()})
        for pattern, override in overrides:
            if fnmatchcase(tensor, pattern):
                values.update({k: evaluate(v, tensor, t) for k, v in override.items()})
        return values

    models = [m if isinstance(m, str) else m.model for m in recipe.models]
    loras = [None if isinstance(m, str) else m.lora for m in recipe.models]
    return MergeJob(source=source, dialect="merge-rs", method=method.name, models=models, loras=loras,
                    parameters_for=parameters_for, pretrained=recipe.pretrained,
                    by_layer=any(varies_by_layer(s) for s in settings), dtype=recipe.dtype,
                    max_shard_size=recipe.max_shard_size, out=recipe.out, pool=recipe.pool,
                    evaluation=recipe.evaluation)


def _setting(value: Any) -> Any:
    return Gradient(tuple(value.gradient)) if isinstance(value, LayerGradient) else value


def _check_names(source: RecipeSource, method: MethodInfo, values: dict[str, Any], loc: tuple[Any, ...]) -> None:
    """Every parameter must be the method's, with a value of its kind (each anchor of a gradient too)."""
    for name, value in values.items():
        param = method.parameter(name)
        if param is None:
            known = ", ".join(p.name for p in method.parameters) or "none"
            raise source.error((*loc, name), f"{method.name} has no parameter '{name}' (its parameters: {known})")
        for v in value.anchors if isinstance(value, Gradient) else (value,):
            problem = param.problem(v)
            if problem:
                raise source.error((*loc, name), f"expected {problem}, got {v!r}")


def _per_model(source: RecipeSource, method: MethodInfo, models: list[str | ModelEntry],
               base: dict[str, Any]) -> dict[str, list[Any]]:
    """Per-model values (``models[i].parameters``) gathered into the method's list parameters."""
    entries = [m.parameters if isinstance(m, ModelEntry) else {} for m in models]
    names = {name for e in entries for name in e}
    out = {}
    for name in sorted(names):
        where = next(i for i, e in enumerate(entries) if name in e)
        loc = ("models", where, "parameters", name)
        param = method.parameter(name)
        if param is None or param.kind not in PER_MODEL_KINDS:
            raise source.error(loc, f"{method.name} has no per-model parameter '{name}'")
        missing = [i for i, e in enumerate(entries) if name not in e]
        if missing:
            raise source.error(loc, f"give '{name}' for every model or for none (model {missing[0]} has none)")
        if name in base:
            raise source.error(("parameters", name), f"'{name}' is also given per model")
        out[name] = [_setting(e[name]) for e in entries]
        for i, value in enumerate(out[name]):
            for v in value.anchors if isinstance(value, Gradient) else (value,):
                problem = param.problem(v, element=True)
                if problem:
                    raise source.error(("models", i, "parameters", name), f"expected {problem}, got {v!r}")
    return out
