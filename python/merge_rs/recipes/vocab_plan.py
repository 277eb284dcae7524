"""A mergekit config whose ``tokenizer_source`` re-indexes embedding rows, as a plan: the models' headers with
their vocabulary tensors resized to the new vocabulary, and, while the merge runs, each model read as its own
tensors but those, which come re-indexed from a scratch directory beside the output (removed afterwards).

A ``model+lora`` input is keyed by its adapter: as in mergekit, its vocabulary is the model's (tokenizer and
``vocab_size``), its rows are read with the adapter applied before they are re-indexed, and the adapter is laid
over the rest of the model while the merge runs."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from ..reports import CheckpointInfo
from .job import MergeJob, MergePlan, plan, resolve_model
from .mergekit import reference, split_lora
from .mergekit_tokenizer import tokenizer_settings
from .mergekit_vocab import FIELD, build_vocabulary, vocab_tensor_names, write_aligned


def plan_reindexed(job: MergeJob, base: Path | None, resolved: list[Path], loras: list[Path | None] | None = None,
                   base_lora: Path | None = None) -> MergePlan:
    """The plan of a merge whose inputs' vocabulary tensors are re-indexed (``resolved``: ``job.models``' paths;
    ``loras``: the adapter read over each, if any; ``base_lora``: over the base)."""
    from ..api import inspect

    models = resolved
    loras = loras or [None] * len(models)
    if job.slices is not None:  # every model of every slice is among job.models; the config's base too
        written = job.source.data.get("base_model")
        base = _path(job, written, ("base_model",)) if written else None
        models = [m for m in resolved if m != base]
        loras = [None] * len(models)  # mergekit takes no model+lora in slices
    settings = tokenizer_settings(job.source)
    field = ("tokenizer", "source") if settings.block else FIELD
    value = settings.source
    # mergekit takes a model+lora's tokenizer from the model
    named = resolve_model(split_lora(str(value))[0], job.source, field) if value not in ("base", "union") else None
    keys = [a or m for m, a in zip(models, loras)]
    base_key = base_lora or base
    homes = {k: m for k, m in [*zip(keys, models), (base_key, base)] if k is not None}
    tokens = {}
    for token, spec in settings.tokens.items():
        if spec.model is not None:  # an input as the config names it (model+lora: that adapter over the model)
            loc = ("tokenizer", "tokens", token, "source")
            model, adapter = split_lora(spec.model)
            spec = replace(spec, model=resolve_model(adapter or model, job.source, loc))
            if spec.model not in homes:
                raise job.source.error(loc, f"{spec.model} is not one of the models merged")
        tokens[token] = spec
    vocabulary = build_vocabulary(job.source, value, base, models, named, tokens, settings.pad_to_multiple_of)
    adapters = {k: m for k, m in homes.items() if k != m}
    vocabulary.read_through(adapters, base_key)
    infos = {k: inspect(m) for k, m in homes.items()}
    every = set.intersection(*({t.name for t in info.tensors} for info in infos.values()))
    names = vocab_tensor_names([t.name for t in infos[keys[0]].tensors if t.name in every])
    if not names:
        raise job.source.error(FIELD, f"{models[0]} has no embedding tensor (embed_tokens, lm_head, …) to re-index")

    def resized(info: CheckpointInfo) -> CheckpointInfo:
        tensors = [replace(t, shape=[vocabulary.size, *t.shape[1:]],
                           parameters=t.parameters // t.shape[0] * vocabulary.size,
                           bytes=t.bytes // t.shape[0] * vocabulary.size) if t.name in names else t
                   for t in info.tensors]
        dtypes: dict[str, int] = {}
        for t in tensors:
            dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.parameters
        return replace(info, tensors=tensors, parameters=sum(t.parameters for t in tensors),
                       bytes=sum(t.bytes for t in tensors), dtypes=dtypes)

    if job.slices is not None:
        from .mergekit_slices import plan_frankenmerge

        result = plan_frankenmerge(job, resolved, {m: resized(info) for m, info in infos.items()})
    else:
        result = plan(job, base, models, loras, model_infos=[resized(infos[k]) for k in keys],
                      base_info=resized(infos[base_key]) if base_key else None)
        result.pretrained_lora = base_lora
    note = (f"{'tokenizer' if settings.block else 'tokenizer_source'}: {', '.join(names)} re-indexed to the "
            f"output's {vocabulary.size:,}-row vocabulary (the tokenizer written is the new one)")
    if note not in job.warnings:
        job.warnings.append(note)
    result.vocabulary = (vocabulary, names, infos, _slice_groups(job, resolved, names, base), adapters)
    result.config_updates = {**(result.config_updates or {}), "vocab_size": vocabulary.size}
    return result


def _path(job: MergeJob, written: Any, loc: tuple[Any, ...]) -> Path:
    """The local path of a model reference as the config writes it (a name, or {path: ...})."""
    return resolve_model(reference(job.source, written, loc), job.source, loc)


def _slice_groups(job: MergeJob, resolved: list[Path], names: list[str],
                  base: Path | None) -> dict[str, tuple[list[Path], Path | None]]:
    """With slices, each vocabulary tensor's models and base, as mergekit gathers them: the sources of the slice
    that gives the tensor (the first for the embeddings, the last for the head), and that slice's base model."""
    if job.slices is None:
        return {}
    from .mergekit_slices import outer_slice

    paths = dict(zip(job.models, resolved))
    groups = {}
    for name in names:
        piece = outer_slice(job.slices.slices, name)
        own = _path(job, piece.base_model, (*piece.loc, "base_model")) if piece.base_model else base
        groups[name] = ([paths[s.model] for s in piece.sources], own)
    return groups


@contextmanager
def with_reindexed_inputs(p: MergePlan, out: Path, overwrite: bool, reads: list[Any]) -> Iterator[MergePlan]:
    """``p`` with every model (and θ₀) read through a view whose vocabulary tensors are re-indexed copies. The
    output is checked first, as the merge would check it, so nothing is written for a merge that cannot run."""
    from ..output import check_output

    vocabulary, names, infos, groups, adapters = p.vocabulary
    check_output(out, [*infos, *adapters.values(), *reads], overwrite)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.vocabulary-", dir=out.parent if out.parent.is_dir() else None))
    try:
        homes = {k: adapters.get(k, k) for k in infos}
        shards = {k: {t.name: str(m / t.shard if m.is_dir() else m) for t in infos[k].tensors}
                  for k, m in homes.items()}
        dirs = write_aligned(vocabulary, shards, names, scratch, groups, adapters)

        def view(k: Path) -> list[tuple[str, Path, str]]:
            return [*((n, dirs[k], n) for n in names),
                    *((t.name, homes[k], t.name) for t in infos[k].tensors if t.name not in names)]

        def over(k: Path | None) -> tuple[Path, list[str]] | None:
            """The adapter read over ``k``'s view, left out of the re-indexed tensors (its change is in them)."""
            return (k, names) if k in adapters else None

        def reread(entries: list[tuple[str, Path, str]]) -> list[tuple[str, Path, str]]:
            """A frankenmerge's view with its vocabulary tensors read from the re-indexed copies."""
            return [(out, dirs[m], src) if src in names else (out, m, src) for out, m, src in entries]

        if p.views:
            yield replace(p, views=[reread(v) for v in p.views], base_view=reread(p.base_view))
        else:
            keys = [a or m for m, a in zip(p.models, p.loras)]
            base = p.pretrained_lora or p.pretrained
            yield replace(p, pretrained=None, pretrained_lora=None, views=[view(k) for k in keys],
                          base_view=view(base) if base else [], view_adapters=[over(k) for k in keys],
                          base_view_adapter=over(base))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
