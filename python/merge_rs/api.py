"""The Python API over the Rust engine: ``merge``, ``inspect``, ``cosine_similarity``."""

from __future__ import annotations

import json
import keyword
import math
import os
import re
from collections.abc import Sequence
from itertools import zip_longest
from typing import Any, Union

from . import _core
from .exceptions import InvalidArgumentError
from .methods import get_method
from .output import protected
from .progress import ProgressCallback, with_progress
from .reports import CheckpointInfo, CosineSimilarity, MergeReport

PathLike = Union[str, "os.PathLike[str]"]
# A fine-tuned model: a checkpoint or a PEFT LoRA adapter (read over ``pretrained``), or (model, adapter): the
# adapter read over that model (mergekit's ``model+lora``).
ModelInput = Union[PathLike, tuple[PathLike, PathLike]]
# A PEFT adapter laid over a view, and the view's tensors it leaves alone.
ViewAdapter = tuple[PathLike, Sequence[str]]

DEFAULT_MAX_SHARD_SIZE = "5GB"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
               "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes in ``size``: an int, or a string such as ``5GB`` (10⁹) or ``2GiB`` (2³⁰), as transformers reads it."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if not match:
            raise InvalidArgumentError(f"cannot read size '{size}' (examples: 5GB, 500MB, 2GiB)")
        value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()])
    if value <= 0:
        raise InvalidArgumentError(f"a size must be positive (got {size})")
    return value


def merge(
    method: str,
    models: Sequence[ModelInput],
    out: PathLike,
    *,
    pretrained: ModelInput | None = None,
    dtype: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    threads: int = 0,
    overwrite: bool = False,
    allow_nonfinite: bool = False,
    memory_budget: int | str | None = None,
    progress: bool | ProgressCallback = False,
    reads: Sequence[PathLike] = (),
    extra_files: dict[str, str] | None = None,
    groups: Sequence[tuple[Sequence[str], dict[str, Any]]] = (),
    model_card: bool | str = True,
    views: Sequence[Sequence[tuple[str, PathLike, str]]] = (),
    base_view: Sequence[tuple[str, PathLike, str]] = (),
    view_adapters: Sequence[ViewAdapter | None] = (),
    base_view_adapter: ViewAdapter | None = None,
    config_updates: dict[str, Any] | None = None,
    **parameters: Any,
) -> MergeReport:
    """Merge ``models`` (fine-tuned checkpoints: HF directories or ``.safetensors`` files) into ``out``.

    A model may be a PEFT LoRA adapter directory, read as ``pretrained`` plus the adapter's change, or a pair
    ``(model, adapter)``: the adapter read over that model; ``pretrained`` may be such a pair too (mergekit's
    ``base_model: model+lora``).

    ``method`` is one of ``merge_rs.METHODS``; ``parameters`` are its parameters (the engine fills in the
    FusionBench defaults and checks every value before reading anything), e.g.
    ``merge("ties", models, "out", pretrained=base, threshold=20, merge_func="sum")``. The work runs in Rust
    with the GIL released; ``progress=True`` shows a bar on a terminal, a callable receives
    ``(phase, done_bytes, total_bytes)``. ``reads`` names other files the caller read for this merge (a pool
    file, datasets): the output must not overlap them. ``extra_files`` ({name: text}) are written into the
    output beside the weights, in the same atomic step. ``memory_budget`` caps what the whole-tensor methods
    (the SVD family, SLERP, breadcrumbs, …) hold at once (default 160 MiB; a larger tensor runs alone).
    A parameter that is a Python keyword takes a trailing underscore (``lambda_=0.5`` for ``lambda``).
    ``groups`` ([(tensor names, parameters)]) merges those tensors with their own parameters of ``method``
    (complete sets: nothing is inherited from ``parameters``). ``views`` replaces ``models`` with models assembled
    from other checkpoints' tensors, each a list of (name, checkpoint, name there), as mergekit's ``slices`` need
    (``base_view`` likewise the pretrained model); ``view_adapters`` (and ``base_view_adapter``) lay a PEFT
    adapter over a view, but not over the view's tensors it names (they hold its change already);
    ``config_updates`` sets fields of the output's ``config.json``. The output gets a model card (``README.md``:
    method, resolved parameters, and the recipe that reproduces the merge); ``model_card`` is False for none,
    or the card's text.
    """
    spec = get_method(method)
    _check_threads(threads)
    files = dict(extra_files or {})
    if model_card and "README.md" not in files:
        files["README.md"] = model_card if isinstance(model_card, str) else _card(
            spec.name, parameters, pretrained[0] if isinstance(pretrained, tuple) else pretrained, models, dtype,
            max_shard_size, out)
    request = {
        "method": spec.name,
        "parameters": _engine_parameters(parameters),
        "pretrained": _path(pretrained[1] if isinstance(pretrained, tuple) else pretrained)
        if pretrained is not None else None,
        "pretrained_adapter_over": _path(pretrained[0]) if isinstance(pretrained, tuple) else None,
        "models": [_path(m[1] if isinstance(m, tuple) else m) for m in models],
        "adapter_bases": [_path(m[0]) if isinstance(m, tuple) else None for m in models],
        "out": _path(out),
        "dtype": dtype,
        "max_shard_size": parse_size(max_shard_size),
        "threads": threads,
        "overwrite": overwrite,
        "allow_nonfinite": allow_nonfinite,
        "memory_budget": parse_size(memory_budget) if memory_budget is not None else 0,
        "reads": [*(_path(p) for p in reads), *protected()],  # and never inside the shipped zoo
        "files": sorted(files.items()),
        "groups": [{"tensors": list(names), "parameters": _engine_parameters(values)} for names, values in groups],
        "views": [_view(view, adapter) for view, adapter in zip_longest(views, view_adapters[: len(views)])],
        "base_view": _view(base_view, base_view_adapter),
        "config_updates": config_updates or {},
    }
    report = with_progress(progress, lambda callback: _core.merge(json.dumps(request), callback))
    return MergeReport.from_json(json.loads(report))


def _view(entries: Sequence[tuple[str, PathLike, str]], adapter: ViewAdapter | None = None) -> dict[str, Any]:
    """A model assembled from other checkpoints' tensors (and an adapter over it), as the engine's request carries
    it."""
    return {"tensors": [{"out": name, "path": _path(path), "source": source} for name, path, source in entries],
            "adapter": {"path": _path(adapter[0]), "skip": list(adapter[1])} if adapter else None}


def _card(method: str, parameters: dict[str, Any], pretrained: PathLike | None, models: Sequence[ModelInput],
          dtype: str | None, max_shard_size: int | str, out: PathLike) -> str:
    """The model card of a merge called with these arguments."""
    from .model_card import card_for_call

    given = {_unkeyword(k): v for k, v in parameters.items() if v is not None}
    return card_for_call(method, given, pretrained, models, dtype, max_shard_size, out)


def _engine_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    return {_unkeyword(name): _plain(value) for name, value in parameters.items() if value is not None}


def _unkeyword(name: str) -> str:
    """``lambda_`` → ``lambda``: a parameter named after a Python keyword is passed with a trailing underscore."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def _check_threads(threads: int) -> None:
    if threads < 0:
        raise InvalidArgumentError(f"threads must be ≥ 0 (got {threads}; 0 uses one per core)")


def _path(path: PathLike) -> str:
    """A path for the engine's JSON request, which carries UTF-8 only."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgumentError(f"{text!r}: merge-rs takes only paths that are valid UTF-8") from None
    return text


def _plain(value: Any) -> Any:
    """A parameter value as JSON for the engine, which checks it: paths as strings, sequences as lists, and
    non-finite floats (which JSON cannot carry) as their name, so that the engine's error names the parameter."""
    if isinstance(value, os.PathLike):
        return _path(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def inspect(path: PathLike) -> CheckpointInfo:
    """Describe the checkpoint at ``path`` (file or directory) from its headers."""
    return CheckpointInfo.from_json(json.loads(_core.inspect(_path(path))))


def cosine_similarity(
    pretrained: PathLike,
    models: Sequence[PathLike],
    *,
    threads: int = 0,
    progress: bool | ProgressCallback = False,
) -> CosineSimilarity:
    """Pairwise cosine similarity of the task vectors τᵢ = θᵢ − θ₀, accumulated in float64 (``None`` where a
    task vector is zero: its direction, and so the similarity, is undefined)."""
    _check_threads(threads)
    paths: list[str | os.PathLike[str]] = [_path(m) for m in models]
    data = with_progress(progress, lambda callback: _core.cosine_similarity(_path(pretrained), paths, threads,
                                                                            callback))
    return CosineSimilarity.from_json(json.loads(data))

