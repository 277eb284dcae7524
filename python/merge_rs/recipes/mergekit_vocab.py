"""mergekit's ``tokenizer_source`` where it changes weights: the output's vocabulary (the base's, the union of every
model's, or one model's tokenizer) built as mergekit 0.1.5 builds it, and each model's embedding rows
(``embed_tokens``, ``lm_head``: every tensor with one row per token) re-indexed to it before the merge. A token a
model lacks gets mergekit's default row: the one model that has it, else the base model's row, else the mean of the
models that have it, else zeros. The re-indexed tensors go to a scratch directory beside the output (one tensor
name at a time in memory: every model's copy, and one re-indexed copy), with the new tokenizer's files, and the
merge reads them in place of the models' own.

One order differs from mergekit's: tokens that two non-base models add are numbered in the config's model order,
where mergekit numbers them in the order of a Python set (which changes from run to run)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .source import RecipeSource

FIELD = ("tokenizer_source",)
# The tensors with one row per token, by the end of their names (mergekit's vocabulary-axis weights).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt")
VOCAB_TENSORS = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight", "embed_out.weight")


@dataclass(frozen=True)
class TokenSpec:
    """A ``tokenizer.tokens`` entry: where the token's row comes from (``zero``, a ``model``'s row of the token, or
    a ``model_token``: the model's row of another token or id), and whether it replaces the models' own rows."""

    kind: str
    model: Any  # the model's name in the config, then its path
    token_id: int | None
    token: str | None
    force: bool


@dataclass
class Vocabulary:
    """The output's tokenizer and, per model, the model row of every output token (-1: the model lacks it);
    ``tokens``: the config's per-token rows; ``size``: the rows written (the vocabulary, padded)."""

    tokenizer: Any
    size: int
    rows: dict[Path, list[int]]
    base: Path | None
    tokens: dict[int, TokenSpec] = field(default_factory=dict)
    originals: dict[Path, dict[str, int]] = field(default_factory=dict)

    def read_through(self, adapters: dict[Path, Path], base: Path | None) -> None:
        """Key the rows of each ``model+lora`` input by its adapter too (``adapters``: adapter → the model it is
        read over, whose vocabulary it has, as in mergekit), and make ``base`` (the base's key) the base."""
        for adapter, model in adapters.items():
            self.rows[adapter] = self.rows[model]
            if model in self.originals:
                self.originals[adapter] = self.originals[model]
        self.base = base

    @property
    def tokens_in_vocabulary(self) -> int:
        return len(next(iter(self.rows.values())))


def config_vocab_size(model: Path) -> int | None:
    """``vocab_size`` from the model's ``config.json`` (or its ``text_config``), as mergekit reads it."""
    try:
        config = json.loads((model / "config.json").read_bytes()[: 1 << 20])
    except (OSError, ValueError):
        return None
    size = config.get("vocab_size") if isinstance(config, dict) else None
    if size is None and isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        size = config["text_config"].get("vocab_size")
    return size if isinstance(size, int) else None


def has_tokenizer_files(model: Path) -> bool:
    """Whether ``model`` holds any file a tokenizer loads from (mergekit takes a model without one to have the
    base's vocabulary)."""
    directory = model if model.is_dir() else model.parent
    return any((directory / name).exists() for name in TOKENIZER_FILES)


def _load(source: RecipeSource, model: Path) -> Any:
    try:
        from transformers import AutoTokenizer
    except ModuleNotFoundError:
        raise source.error(FIELD, "re-indexing embeddings to a new vocabulary needs transformers "
                                  "(pip install 'merge-rs[clip]')") from None
    try:
        return AutoTokenizer.from_pretrained(model, use_fast=True)
    except Exception as e:  # noqa: BLE001 - any loading failure is the user's tokenizer
        raise source.error(FIELD, f"cannot load the tokenizer of {model} ({type(e).__name__})") from None


def _stripped(source: RecipeSource, model: Path, tokenizer: Any, size: int) -> Any:
    """The base's tokenizer less its tokens past ``size`` (rows the model does not have), with the merges that
    use them, as mergekit strips it; mergekit does this for BPE tokenizers only."""
    import copy
    import json

    from tokenizers import Tokenizer

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = data["model"]["type"]
    if kind != "BPE":
        raise source.error(FIELD, f"{model}'s tokenizer has ids past its vocab_size ({size}), which mergekit strips "
                                  f"from BPE tokenizers only (this one is {kind})")
    unused = {token for token, i in tokenizer.get_vocab().items() if i >= size}
    data["added_tokens"] = [entry for entry in data["added_tokens"] if entry["id"] < size]
    for token in unused:
        data["model"]["vocab"].pop(token, None)
    data["model"]["merges"] = [m for m in data["model"]["merges"]
                               if not unused.intersection(m.split(" ") if isinstance(m, str) else m)]
    out = copy.deepcopy(tokenizer)
    try:
        out._tokenizer = Tokenizer.from_str(json.dumps(data))
    except Exception as e:  # noqa: BLE001 - the tokenizers library's own message says which token
        raise source.error(FIELD, f"{model}'s tokenizer without its ids past vocab_size ({size}) is not a valid "
                                  f"tokenizer ({e}); mergekit fails on it too") from None
    return out


def _within(tokenizer: Any, size: int | None) -> dict[str, int]:
    """The tokenizer's vocabulary less the ids past the model's ``vocab_size`` (rows it does not have)."""
    return {t: i for t, i in tokenizer.get_vocab().items() if size is None or i < size}


def _union(base: Any, base_size: int | None, tokenizers: dict[Path, Any]) -> Any:
    """The base tokenizer with every other model's tokens added after its own: plain tokens first, in the models'
    order, then the added (special) tokens with their first settings."""
    import copy

    plain: dict[str, None] = {}
    added: dict[str, Any] = {}
    for model, tokenizer in tokenizers.items():
        size = config_vocab_size(model) or tokenizer.vocab_size
        specials = tokenizer.added_tokens_decoder
        special_names = {info.content for info in specials.values()}
        for token, i in tokenizer.get_vocab().items():
            if i < size and token not in special_names:
                plain.setdefault(token)
        for i, info in specials.items():
            if i < size:
                added.setdefault(info.content, info)
    out = copy.deepcopy(base)
    own = _within(base, base_size)
    out.add_tokens([t for t in plain if t not in added and t not in own])
    out.add_tokens(list(added.values()))
    return out


def build_vocabulary(source: RecipeSource, value: Any, base: Path | None, models: list[Path], named: Path | None,
                     tokens: dict[str, TokenSpec] | None = None, pad_to_multiple_of: int | None = None) -> Vocabulary:
    """The output vocabulary for source ``value`` (``named`` is the model it names, if any), with ``tokens``
    added (their models resolved to paths), and each model's rows; ``models`` in the config's order, the base not
    among them."""
    first = base or models[0]
    tokenizers = {m: _load(source, m) for m in dict.fromkeys([first, *models])
                  if m == first or has_tokenizer_files(m)}
    tokenizers.update({m: tokenizers[first] for m in models if m not in tokenizers})  # mergekit: the base's
    size = config_vocab_size(first)
    if size is not None and max(tokenizers[first].get_vocab().values()) >= size:
        stripped = _stripped(source, first, tokenizers[first], size)
        tokenizers.update({m: stripped for m, t in tokenizers.items() if t is tokenizers[first]})
    if value == "base":
        out = tokenizers[first]
    elif value == "union":
        out = _union(tokenizers[first], config_vocab_size(first), tokenizers)
    else:
        out = _load(source, named) if named is not None else tokenizers[first]
    tokens = tokens or {}
    missing = [t for t in tokens if t not in out.get_vocab()]
    if missing:
        import copy

        out = copy.deepcopy(out)
        out.add_tokens(missing)
    vocab = out.get_vocab()
    rows = {}
    for model, tokenizer in tokenizers.items():
        own = _within(tokenizer, config_vocab_size(model))
        rows[model] = [-1] * len(vocab)
        for token, i in vocab.items():
            rows[model][i] = own.get(token, -1)
    padded = len(vocab)
    if pad_to_multiple_of and padded % pad_to_multiple_of:
        padded += pad_to_multiple_of - padded % pad_to_multiple_of
    return Vocabulary(out, padded, rows, base, {vocab[t]: spec for t, spec in tokens.items()},
                      {m: t.get_vocab() for m, t in tokenizers.items()})


def vocab_tensor_names(names: list[str]) -> list[str]:
    """The tensors that hold one row per token."""
    return [n for n in names if n.endswith(VOCAB_TENSORS)]


def _default_rows(vocabulary: Vocabulary, tensors: dict[Path, Any], base: Path | None) -> dict[int, Any]:
    """mergekit's row for each output token that some model of ``tensors`` lacks or whose row the config forces
    (see the module's text); ``base``: the base model of the merge that reads them."""
    import torch

    models = list(tensors)
    dtype = tensors[models[0]].dtype
    for t in tensors.values():
        dtype = torch.promote_types(dtype, t.dtype)
    shape = tensors[models[0]].shape[1:]
    out: dict[int, Any] = {}
    for token in range(vocabulary.tokens_in_vocabulary):
        have = [m for m in models if vocabulary.rows[m][token] >= 0]
        spec = vocabulary.tokens.get(token)
        if len(have) == len(models) and not (spec and spec.force):
            continue
        if spec is not None:
            out[token] = _configured_row(vocabulary, tensors, token, spec)
        elif len(have) == 1:
            out[token] = tensors[have[0]][vocabulary.rows[have[0]][token]]
        elif not have:
            out[token] = torch.zeros(shape, dtype=tensors[models[0]].dtype)
        elif base in have:
            out[token] = tensors[base][vocabulary.rows[base][token]]
        else:
            embed = torch.zeros(shape, dtype=dtype)
            for m in have:
                embed = embed + tensors[m][vocabulary.rows[m][token]]
            out[token] = embed / len(have)
    return out


def _configured_row(vocabulary: Vocabulary, tensors: dict[Path, Any], token: int, spec: TokenSpec) -> Any:
    """The row a ``tokenizer.tokens`` entry gives: zeros, or a model's row of this or another token."""
    first = next(iter(tensors.values()))
    if spec.kind == "zero":
        return first.new_zeros(first.shape[1:])
    table = tensors[spec.model]
    if spec.kind == "model":
        row = vocabulary.rows[spec.model][token]
    else:
        row = spec.token_id if spec.token_id is not None else vocabulary.originals[spec.model].get(spec.token, -1)
    if not 0 <= row < table.shape[0]:
        raise ValueError(f"tokenizer.tokens: {spec.model} has no row for the token asked ({spec.token or row})")
    return table[row]


def write_aligned(vocabulary: Vocabulary, shards: dict[Path, dict[str, str]], names: list[str], scratch: Path,
                  groups: dict[str, tuple[list[Path], Path | None]] | None = None,
                  adapters: dict[Path, Path] | None = None) -> dict[Path, Path]:
    """Each model's ``names`` re-indexed to the vocabulary, one file per tensor under ``scratch/i/`` with an index,
    beside its ``config.json`` and the new tokenizer's files; returns model → its directory there. ``shards``: per
    model in mergekit's gather order (the config's models, then the base), each tensor's file. ``groups``: for a
    tensor that not every model feeds (a frankenmerge's), the models that do, in gather order, and their base,
    which decide its default rows. ``adapters``: the models keyed by a PEFT adapter (adapter → the model it is
    read over), whose rows are read with the adapter applied."""
    import torch
    from safetensors.torch import save_file

    adapters = adapters or {}

    models = list(shards)
    dirs = {m: scratch / str(i) for i, m in enumerate(models)}
    for d in dirs.values():
        d.mkdir(parents=True)
    forced = {i for i, spec in vocabulary.tokens.items() if spec.force}
    for k, name in enumerate(names):
        tensors = {}
        for m in models:
            tensors[m] = _read(shards[m][name], name, (m, adapters[m]) if m in adapters else None)
        feeding, base = (groups or {}).get(name, (models, vocabulary.base))
        defaults = _default_rows(vocabulary, {m: tensors[m] for m in feeding}, base)
        for m in models:
            rows = vocabulary.rows[m]
            out = torch.zeros((vocabulary.size, *tensors[m].shape[1:]), dtype=tensors[m].dtype)
            present = [i for i in range(len(rows)) if rows[i] >= 0 and i not in forced]
            out[present] = tensors[m][[rows[i] for i in present]]
            for i, row in defaults.items():
                if rows[i] < 0 or i in forced:
                    out[i] = row
            if vocabulary.size > len(rows):  # padding rows: the mean of the vocabulary's
                out[len(rows):] = out[: len(rows)].mean(dim=0)
            save_file({name: out.contiguous()}, str(dirs[m] / f"vocabulary-{k}.safetensors"))
        del tensors, defaults
    index = {"metadata": {}, "weight_map": {name: f"vocabulary-{k}.safetensors" for k, name in enumerate(names)}}
    for m, d in dirs.items():
        (d / "model.safetensors.index.json").write_text(json.dumps(index))
        home = adapters.get(m, m)
        if (home / "config.json").is_file():
            shutil.copyfile(home / "config.json", d / "config.json")
        vocabulary.tokenizer.save_pretrained(d)
    return dirs


def _read(file: str, name: str, over: tuple[Path, Path] | None) -> Any:
    """Tensor ``name`` of the checkpoint file ``file``; with ``over`` (an adapter, and the model it is read over,
    which holds ``file``), the adapter's change applied, in the stored dtype (as mergekit saves the model it merges
    the adapter into)."""
    import torch
    from safetensors import safe_open

    with safe_open(file, framework="pt") as f:
        if over is None:
            return f.get_tensor(name)
        dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[f.get_slice(name).get_dtype()]
    from .. import _core

    shape, values = _core.read_tensor(over[1], name, over[0])
    return torch.frombuffer(bytearray(values), dtype=torch.float32).reshape(shape).to(dtype)
