"""Running a recipe: load it (either dialect, overrides applied), resolve its models, plan from the headers,
then show the plan (``--dry-run``) or merge with a model card."""

from __future__ import annotations

import copy
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from .. import _core, api
from ..reports import MergeReport
from ..model_card import card_yaml, model_card, show
from .job import MergeJob, MergePlan, plan, resolve_model
from .mergekit import is_mergekit, job_from_mergekit
from .mergekit_tokenizer import check_tokenizer_source
from .own import job_from_recipe
from .source import RecipeSource, load_source

OUT_WIDTH = {"float32": 4, "float16": 2, "bfloat16": 2}


def load_job(path: Path, overrides: Sequence[str] = ()) -> MergeJob:
    return job_from_source(load_source(Path(path), overrides))


def job_from_source(source: RecipeSource) -> MergeJob:
    return job_from_mergekit(source) if is_mergekit(source.data) else job_from_recipe(source)


def prepare(job: MergeJob) -> MergePlan:
    """Resolve the models (paths, hub ids or the pool) and plan every tensor's parameters from the headers."""
    pretrained, models = job.pretrained, list(job.models)
    if job.pool is not None:
        from ..clip.pool import get_pool

        if isinstance(job.pool, str):
            beside = job.source.path.parent / job.pool
            job.pool = get_pool(str(beside) if job.pool.endswith(".json") and beside.is_file() else job.pool)
        pretrained = pretrained or str(job.pool.pretrained_path())
        models = models or [str(p) for p in job.pool.model_paths()]
    if not models:
        raise job.source.error(("models",), "no models to merge: give models or a pool")
    _check_shard_size(job)
    where = _model_locations(job)
    resolved = [resolve_model(m, job.source, where.get(m, ("models",))) for m in models]
    base_path = resolve_model(pretrained, job.source, where.get(pretrained, ("pretrained",))) if pretrained else None
    notes, reindex = check_tokenizer_source(job.source, [*([base_path] if base_path else []), *resolved])
    job.warnings += [note for note in notes if note not in job.warnings]
    loras = [resolve_model(a, job.source, where.get(a, ("models",))) if a else None for a in job.loras] \
        or [None] * len(models)
    over_base = resolve_model(job.pretrained_lora, job.source, ("base_model",)) if job.pretrained_lora else None
    if reindex:
        from .vocab_plan import plan_reindexed

        return plan_reindexed(job, base_path, resolved, loras, over_base)
    if job.slices:
        from .mergekit_slices import plan_frankenmerge

        return plan_frankenmerge(job, resolved)
    result = plan(job, base_path, resolved, loras)
    result.pretrained_lora = over_base
    return result


def _check_shard_size(job: MergeJob) -> None:
    """The check the merge would make, made before it (a dry run makes it too), with the field's location."""
    from ..api import parse_size

    try:
        parse_size(job.max_shard_size)
    except (ValueError, TypeError, OverflowError) as e:
        raise job.source.error(("max_shard_size",), str(e)) from None


def _model_locations(job: MergeJob) -> dict[str, tuple[Any, ...]]:
    """Where the recipe names each model, for errors."""
    data = job.source.data
    where: dict[str, tuple[Any, ...]] = {}
    for key in ("pretrained", "base_model"):
        if isinstance(data.get(key), str):
            for part in [data[key], *data[key].split("+", 1)]:  # mergekit's model+lora names both
                where.setdefault(part, (key,))
    for i, entry in enumerate(data.get("models") or []):
        if isinstance(entry, dict) and isinstance(entry.get("model"), str):
            for part in entry["model"].split("+", 1):  # mergekit's model+lora names both
                where.setdefault(part, ("models", i, "model"))
            if isinstance(entry.get("lora"), str):
                where.setdefault(entry["lora"], ("models", i, "lora"))
        elif isinstance(entry, str):
            for part in entry.split("+", 1):
                where.setdefault(part, ("models", i))
    for i, piece in enumerate(data.get("slices") or []):
        for j, entry in enumerate(piece.get("sources") or [] if isinstance(piece, dict) else []):
            if isinstance(entry, dict) and isinstance(entry.get("model"), str):
                where.setdefault(entry["model"], ("slices", i, "sources", j, "model"))
    return where


def describe(p: MergePlan, threads: int) -> str:
    """The plan as a dry run prints it: nothing but headers was read."""
    job = p.job
    ref = p.inputs[-len(p.models)]
    merged = set(p.merged)
    out_bytes = sum(t.parameters * OUT_WIDTH[job.dtype] if job.dtype and t.name in merged else t.bytes
                    for t in ref.tensors)
    streams = (threads or _cores()) * (len(p.models) + 2) * _core.DEFAULT_CHUNK_BYTES
    lines = [f"recipe: {job.source.path} ({job.dialect})", f"method: {job.method}"]
    for label, info in zip(["pretrained"] * bool(p.pretrained or p.base_view)
                           + [f"model {i + 1}" for i in range(len(p.models))],
                           p.inputs):
        lines.append(f"{label}: {info.path} [{info.layout}] {info.tensor_count} tensors, {info.parameters:,} "
                     f"parameters, {', '.join(f'{k} ×{v}' for k, v in sorted(info.dtypes.items()))}")
    shapes = {t.name: t.shape for t in ref.tensors}
    lines.append(f"parameters ({len(p.merged) - sum(len(n) for n, _ in p.groups)} tensors): "
                 + ", ".join(f"{k}={show(v)}" for k, v in sorted(p.parameters.items())))
    for names, values in p.groups:
        changed = {k: v for k, v in values.items() if p.parameters.get(k) != v}
        lines.append(f"  {len(names)} tensors ({names[0]} {shapes.get(names[0])}{', …' if len(names) > 1 else ''}): "
                     + ", ".join(f"{k}={show(v)}" for k, v in sorted(changed.items())))
    lines.append(f"output: {len(ref.tensors)} tensors ({len(p.merged)} merged), {out_bytes / 1e6:,.1f} MB"
                 + (f" as {job.dtype}" if job.dtype else ""))
    lines.append(f"memory: about {streams / 2**20:.0f} MiB of read buffers on {threads or _cores()} threads; "
                 f"whole-tensor methods hold at most {_core.DEFAULT_MEMORY_BUDGET >> 20} MiB (--memory-budget) or one "
                 "larger tensor")
    lines += [f"warning: {w}" for w in job.warnings]
    return "\n".join(lines)


def plan_dict(p: MergePlan) -> dict[str, Any]:
    """The plan as JSON (``--dry-run --json``): every input, and every merged tensor with its shape, dtype and
    parameters."""
    ref = p.inputs[-len(p.models)]
    values = {name: p.parameters for name in p.merged}
    values.update({name: v for names, v in p.groups for name in names})
    return {
        "recipe": str(p.job.source.path), "dialect": p.job.dialect, "method": p.job.method,
        "inputs": [{"path": str(i.path), "layout": i.layout, "tensors": i.tensor_count, "parameters": i.parameters,
                    "dtypes": i.dtypes} for i in p.inputs],
        "tensors": [{"name": t.name, "shape": t.shape, "dtype": t.dtype, "parameters": values.get(t.name)}
                    for t in ref.tensors],
        "dtype": p.job.dtype, "groups": len(p.groups) + 1, "warnings": p.job.warnings,
    }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def execute(p: MergePlan, out: Path, *, overwrite: bool = False, threads: int = 0,
            memory_budget: str | None = None, progress: bool = False, model_card_file: bool = True) -> MergeReport:
    """Merge as planned into ``out``, with the model card unless ``model_card_file`` is false."""
    job = p.job
    card: bool | str = model_card_file and model_card(
        method=job.method, parameters=p.parameters, pretrained=str(p.pretrained) if p.pretrained else None,
        models=_card_models(p), recipe=card_recipe(p), groups=p.groups,
        hf_layout=p.inputs[-len(p.models)].config is not None, title=Path(out).name)
    reads = [job.source.path, *(job.pool.input_paths() if job.pool is not None else [])]
    if p.vocabulary is not None:
        from .vocab_plan import with_reindexed_inputs

        with with_reindexed_inputs(p, Path(out), overwrite, reads) as reindexed:
            return _merge(reindexed, out, card, reads, overwrite, threads, memory_budget, progress)
    return _merge(p, out, card, reads, overwrite, threads, memory_budget, progress)


def _merge(p: MergePlan, out: Path, card: bool | str, reads: list[Any], overwrite: bool, threads: int,
           memory_budget: str | None, progress: bool) -> MergeReport:
    job = p.job
    models: list[api.ModelInput] = [] if p.views else [(m, a) if a else m for m, a in zip(p.models, p.loras)]
    pretrained = (p.pretrained, p.pretrained_lora) if p.pretrained_lora and p.pretrained else p.pretrained
    return api.merge(job.method, models, out, pretrained=pretrained, dtype=job.dtype, views=p.views,
                     base_view=p.base_view, view_adapters=p.view_adapters, base_view_adapter=p.base_view_adapter,
                     config_updates=p.config_updates,
                     max_shard_size=job.max_shard_size, threads=threads, overwrite=overwrite,
                     memory_budget=memory_budget, progress=progress, reads=reads, groups=p.groups,
                     model_card=card, **p.parameters)


def _card_models(p: MergePlan) -> list[str]:
    """The models a card names: each source checkpoint of a frankenmerge, ``model+adapter`` for an adapter read
    over a model."""
    if p.views:
        return list(dict.fromkeys(str(path) for view in [*p.views, p.base_view] for _, path, _ in view))
    return [f"{m}+{a}" if a else str(m) for m, a in zip(p.models, p.loras)]


def card_recipe(p: MergePlan) -> str:
    """The recipe as run, with local model paths made absolute, so the card's copy runs from anywhere."""
    source = p.job.source

    def local(ref: Any) -> Any:
        if isinstance(ref, str):
            for candidate in (Path(ref).expanduser(), source.path.parent / ref):
                if candidate.exists():
                    return str(candidate.resolve())
            if "+" in ref:  # mergekit's model+lora
                return "+".join(local(part) for part in ref.split("+", 1))
        return ref

    data = copy.deepcopy(source.data)
    data.pop("out", None)
    for key in ("pretrained", "base_model"):
        if key in data:
            data[key] = local(data[key])
    for i, entry in enumerate(data.get("models") or []):
        if isinstance(entry, dict) and "model" in entry:
            entry["model"] = local(entry["model"])
            if entry.get("lora"):
                entry["lora"] = local(entry["lora"])
        else:
            data["models"][i] = local(entry)
    for piece in data.get("slices") or []:
        for entry in piece.get("sources") or []:
            entry["model"] = local(entry["model"])
    return card_yaml(data)


