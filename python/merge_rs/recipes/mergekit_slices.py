"""mergekit's ``slices`` with ``passthrough``: a frankenmerge, the output's layers taken in order from layer ranges
of the models, as mergekit builds it. The tensors before the layers (embeddings) come from the first slice's model,
those after (final norm, head) from the last one's; layer ``a + i`` of a slice's model becomes the output's next
layer; ``scale`` (per source, per slice or global; filters and gradients over the slice, as mergekit evaluates
them) multiplies a tensor; ``config.json`` gets the new ``num_hidden_layers``. The engine reads every tensor from
its source, never holding a model: the output is one model assembled from the others' tensors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .settings import evaluate, layer_of
from .source import RecipeSource

# Tensors outside the layers that sit before them (mergekit's pre-weights); every other one sits after.
_BEFORE_LAYERS = re.compile(r"embed|\bwte\b|\bwpe\b|pre_layrnorm")
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class SliceSource:
    model: str
    start: int
    end: int
    settings: list[dict[str, Any]]  # the source's parameters, the slice's, the config's (first match wins)
    loc: tuple[Any, ...]


def parse_slices(source: RecipeSource, shared: dict[str, Any],
                 settings_of: Callable[[Any, tuple[Any, ...]], dict[str, Any]]) -> list[SliceSource]:
    """The slices of a passthrough config, one source each, with their parameter scopes."""
    slices = source.data.get("slices")
    if not isinstance(slices, list) or not slices:
        raise source.error(("slices",), "slices is a list of {sources: [{model, layer_range}]}")
    out = []
    for i, piece in enumerate(slices):
        if not isinstance(piece, dict) or set(piece) - {"sources", "parameters", "base_model", "residual_weight"}:
            raise source.error(("slices", i), "a slice has sources (and parameters)")
        for key in ("base_model", "residual_weight"):
            if key in piece:
                raise source.error(("slices", i, key), f"merge-rs does not support a slice's {key} yet")
        sources = piece.get("sources")
        if not isinstance(sources, list) or len(sources) != 1:
            raise source.error(("slices", i, "sources"), "merge-rs runs slices with one source each (passthrough "
                                                         "frankenmerges); slices merging several models are not "
                                                         "supported yet")
        entry, loc = sources[0], ("slices", i, "sources", 0)
        if not isinstance(entry, dict) or set(entry) - {"model", "layer_range", "parameters"}:
            raise source.error(loc, "a slice source has model, layer_range (and parameters)")
        model, span = entry.get("model"), entry.get("layer_range")
        if not isinstance(model, str) or not model or "+" in model and not Path(model).exists():
            raise source.error((*loc, "model"), "a slice's model is a path or a hub id (no LoRA)")
        if not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
                and 0 <= span[0] < span[1]):
            raise source.error((*loc, "layer_range"), "layer_range is [first, end) with 0 ≤ first < end")
        scopes = [settings_of(entry.get("parameters"), (*loc, "parameters")),
                  settings_of(piece.get("parameters"), ("slices", i, "parameters")), shared]
        out.append(SliceSource(model, span[0], span[1], scopes, loc))
    return out


def layer_map(source: RecipeSource, slices: list[SliceSource], names: dict[str, list[str]],
              ) -> tuple[list[tuple[str, str, str]], dict[str, tuple[int, float]]]:
    """The output as (name, model, name there) for every tensor, and each output tensor's (slice, t): t runs
    over the slice's layers as mergekit's gradients do, 0 outside the layers. ``names``: each model's tensors."""
    entries: list[tuple[str, str, str]] = []
    where: dict[str, tuple[int, float]] = {}
    first, last = slices[0].model, slices[-1].model
    for name in names[first]:
        if layer_of(name) is None and _BEFORE_LAYERS.search(name):
            entries.append((name, first, name))
            where[name] = (0, 0.0)
    offset = 0
    for s, piece in enumerate(slices):
        layers = {layer_of(n) for n in names[piece.model]} - {None}
        count = max(layers, default=-1) + 1  # type: ignore[type-var]
        if piece.end > count:
            raise source.error((*piece.loc, "layer_range"), f"{piece.model} has {count} layers, so layer_range "
                                                            f"[{piece.start}, {piece.end}] reaches past them")
        span = piece.end - piece.start
        for i in range(span):
            for name in names[piece.model]:
                if layer_of(name) == piece.start + i:
                    out = _LAYER.sub(f".{offset + i}.", name, count=1)
                    entries.append((out, piece.model, name))
                    where[out] = (s, i / (span - 1) if span > 1 else 1.0)
        offset += span
    for name in names[last]:
        if layer_of(name) is None and not _BEFORE_LAYERS.search(name):
            entries.append((name, last, name))
            where[name] = (len(slices) - 1, 0.0)
    return entries, where


def scale_for(slices: list[SliceSource], where: dict[str, tuple[int, float]], tensor: str) -> float:
    """passthrough's ``scale`` for an output tensor: its source's, its slice's, then the config's; 1 if none."""
    s, t = where[tensor]
    for scope in slices[s].settings:
        if "scale" in scope:
            value = evaluate(scope["scale"], tensor, t)
            if value is not None:
                return float(value)
    return 1.0


def output_layers(slices: list[SliceSource]) -> int:
    return sum(s.end - s.start for s in slices)


def plan_frankenmerge(job: Any, resolved: list[Path]) -> Any:
    """The plan of a frankenmerge from the models' headers: one model assembled from their tensors."""
    import json
    from dataclasses import replace

    from ..api import inspect
    from .job import plan

    infos = {ref: inspect(path) for ref, path in zip(job.models, resolved)}
    tensors = {ref: {t.name: t for t in info.tensors} for ref, info in infos.items()}
    entries, where = layer_map(job.source, job.slices, {ref: list(found) for ref, found in tensors.items()})
    first = infos[job.slices[0].model]
    picked = [replace(tensors[ref][src], name=out) for out, ref, src in entries]
    composite = replace(first, name="frankenmerge", tensors=picked, tensor_count=len(picked),
                        parameters=sum(t.parameters for t in picked), bytes=sum(t.bytes for t in picked))
    job.parameters_for = lambda tensor, t: {"scale": scale_for(job.slices, where, tensor)}
    result = plan(job, None, [first.path], model_infos=[composite])
    paths = dict(zip(job.models, resolved))
    result.views = [[(out, paths[ref], src) for out, ref, src in entries]]
    config = json.loads(first.config.read_text()) if first.config else {}
    key = next((k for k in ("num_hidden_layers", "n_layer", "num_layers") if k in config), "num_hidden_layers")
    result.config_updates = {key: output_layers(job.slices)}
    return result
