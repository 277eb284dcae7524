"""mergekit's ``slices``: the output's layers taken in order from layer ranges of the models, each slice merged from
its sources with the config's method, as mergekit builds it. The tensors before the layers (embeddings) come from the
first slice's sources, those after (final norm, head) from the last one's; layer ``a + i`` of each source becomes
the output's next layer; parameters come from the source, then the slice, then the config, with filters and
gradients evaluated over the slice (t = i / (layers − 1)); ``config.json`` gets the new layer count. Every source
position becomes one model assembled from its sources' tensors (a composite the engine reads in place), so a
frankenmerge streams like any merge."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .settings import layer_of, scoped
from .source import RecipeSource

# Tensors outside the layers that sit before them (mergekit's pre-weights); every other one sits after.
_BEFORE_LAYERS = re.compile(r"embed|\bwte\b|\bwpe\b|pre_layrnorm")
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class SliceSource:
    model: str
    start: int
    end: int
    settings: dict[str, Any]
    loc: tuple[Any, ...]


@dataclass(frozen=True)
class Slice:
    sources: list[SliceSource]
    settings: dict[str, Any]  # the slice's parameters over the config's
    loc: tuple[Any, ...]
    base_model: Any = None  # the slice's own base_model, as written (the config's applies without one)


@dataclass
class Frankenmerge:
    """The slices, each slice's parameter function, and which of each slice's sources feeds each engine input:
    ``positions[s][j]`` feeds model j and ``base_positions[s]`` θ₀ in slice s (a slice's base_model may be another
    of its sources than the config's)."""

    slices: list[Slice]
    translators: list[Callable[[str, float], dict[str, Any]]]
    base_positions: list[int] | None
    positions: list[list[int]]
    where: dict[str, tuple[int, float]] = field(default_factory=dict)  # output tensor → (slice, t)

    def parameters_for(self, tensor: str, t: float) -> dict[str, Any]:
        s, local = self.where.get(tensor, (0, 0.0))
        return self.translators[s](tensor, local)


def parse_slices(source: RecipeSource, shared: dict[str, Any],
                 settings_of: Callable[[Any, tuple[Any, ...]], dict[str, Any]], same_count: bool) -> list[Slice]:
    """The config's slices; with ``same_count`` every slice must list as many models (each merge input is one
    model per slice)."""
    raw = source.data.get("slices")
    if not isinstance(raw, list) or not raw:
        raise source.error(("slices",), "slices is a list of {sources: [{model, layer_range}]}")
    out: list[Slice] = []
    for i, piece in enumerate(raw):
        if not isinstance(piece, dict) or set(piece) - {"sources", "parameters", "base_model", "residual_weight"}:
            raise source.error(("slices", i), "a slice has sources (and parameters)")
        if not isinstance(piece.get("residual_weight", 0.0), (int, float)) or piece.get("residual_weight") is True:
            raise source.error(("slices", i, "residual_weight"), "residual_weight is a number")
        entries = piece.get("sources")
        if not isinstance(entries, list) or not entries:
            raise source.error(("slices", i, "sources"), "a slice's sources are a list of {model, layer_range}")
        sources = [_source(source, entry, ("slices", i, "sources", j), settings_of)
                   for j, entry in enumerate(entries)]
        if len({s.end - s.start for s in sources}) > 1:
            raise source.error(("slices", i, "sources"), "all sources of a slice take the same number of layers")
        first = out[0].sources if out else sources
        if len({s.model for s in sources}) < len(sources):
            raise source.error(("slices", i, "sources"), "a slice lists a model twice (mergekit keys its sources "
                                                         "by model)")
        if same_count and len(sources) != len(first):
            raise source.error(("slices", i, "sources"), f"merge-rs needs as many sources in every slice ({len(first)} "
                                                         f"in the first, {len(sources)} here)")
        slice_settings = settings_of(piece.get("parameters"), ("slices", i, "parameters"))
        out.append(Slice(sources, scoped(slice_settings, shared), ("slices", i), piece.get("base_model")))
    return out


def _source(source: RecipeSource, entry: Any, loc: tuple[Any, ...],
            settings_of: Callable[[Any, tuple[Any, ...]], dict[str, Any]]) -> SliceSource:
    if not isinstance(entry, dict) or set(entry) - {"model", "layer_range", "parameters"}:
        raise source.error(loc, "a slice source has model, layer_range (and parameters)")
    model, span = entry.get("model"), entry.get("layer_range")
    if not isinstance(model, str) or not model or "+" in model and not Path(model).exists():
        raise source.error((*loc, "model"), "a slice's model is a path or a hub id (no LoRA)")
    if not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
            and 0 <= span[0] < span[1]):
        raise source.error((*loc, "layer_range"), "layer_range is [first, end) with 0 ≤ first < end")
    return SliceSource(model, span[0], span[1], settings_of(entry.get("parameters"), (*loc, "parameters")), loc)


def layer_map(source: RecipeSource, slices: list[Slice], picks: list[int], names: dict[str, list[str]],
              ) -> tuple[list[tuple[str, str, str]], dict[str, tuple[int, float]]]:
    """Source ``picks[s]`` of every slice s as one model: (name, model, name there) for every output tensor, and
    each output tensor's (slice, t), 0 outside the layers. ``names``: each model's tensors."""
    entries: list[tuple[str, str, str]] = []
    where: dict[str, tuple[int, float]] = {}
    first, last = slices[0].sources[picks[0]].model, slices[-1].sources[picks[-1]].model
    for name in names[first]:
        if layer_of(name) is None and _BEFORE_LAYERS.search(name):
            entries.append((name, first, name))
            where[name] = (0, 0.0)
    offset = 0
    for s, piece in enumerate(slices):
        part = piece.sources[picks[s]]
        count = max((i for i in map(layer_of, names[part.model]) if i is not None), default=-1) + 1
        if part.end > count:
            raise source.error((*part.loc, "layer_range"), f"{part.model} has {count} layers, so layer_range "
                                                           f"[{part.start}, {part.end}] reaches past them")
        span = part.end - part.start
        for i in range(span):
            for name in names[part.model]:
                if layer_of(name) == part.start + i:
                    out = _LAYER.sub(f".{offset + i}.", name, count=1)
                    entries.append((out, part.model, name))
                    where[out] = (s, i / (span - 1) if span > 1 else 1.0)
        offset += span
    for name in names[last]:
        if layer_of(name) is None and not _BEFORE_LAYERS.search(name):
            entries.append((name, last, name))
            where[name] = (len(slices) - 1, 0.0)
    return entries, where


def outer_slice(slices: list[Slice], name: str) -> Slice:
    """The slice whose sources give a tensor outside the layers: the first for those before them, else the last."""
    return slices[0] if _BEFORE_LAYERS.search(name) else slices[-1]


def plan_frankenmerge(job: Any, resolved: list[Path], headers: dict[Path, Any] | None = None) -> Any:
    """The plan from the models' headers (``headers`` by path, else read): each engine input is one source
    position assembled from its tensors."""
    import json
    from dataclasses import replace

    from ..api import inspect
    from .job import plan

    merge: Frankenmerge = job.slices
    paths = dict(zip(job.models, resolved))
    infos = {ref: headers[path] if headers else inspect(path) for ref, path in paths.items()}
    tensors = {ref: {t.name: t for t in info.tensors} for ref, info in infos.items()}
    names = {ref: list(found) for ref, found in tensors.items()}

    def composite(picks: list[int], label: str) -> tuple[Any, list[tuple[str, Path, str]]]:
        entries, _ = layer_map(job.source, merge.slices, picks, names)
        first = infos[merge.slices[0].sources[picks[0]].model]
        picked = [replace(tensors[ref][src], name=out) for out, ref, src in entries]
        info = replace(first, name=label, tensors=picked, tensor_count=len(picked),
                       parameters=sum(t.parameters for t in picked), bytes=sum(t.bytes for t in picked))
        return info, [(out, paths[ref], src) for out, ref, src in entries]

    # A slice's sources all span the same layers, so any pick gives each tensor's (slice, t).
    merge.where = layer_map(job.source, merge.slices, [0] * len(merge.slices), names)[1]
    inputs = len(merge.positions[0])
    models = [composite([p[j] for p in merge.positions], f"slices input {j + 1}") for j in range(inputs)]
    base = composite(merge.base_positions, "slices base") if merge.base_positions is not None else None
    result = plan(job, None, [info.path for info, _ in models], model_infos=[info for info, _ in models],
                  base_info=base[0] if base else None)
    result.views = [view for _, view in models]
    result.base_view = base[1] if base else []
    config_path = models[0][0].config
    config = json.loads(config_path.read_text()) if config_path else {}
    key = next((k for k in ("num_hidden_layers", "n_layer", "num_layers") if k in config), "num_hidden_layers")
    result.config_updates = {key: sum(p.sources[0].end - p.sources[0].start for p in merge.slices)}
    return result
