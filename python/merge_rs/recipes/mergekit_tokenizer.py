"""mergekit's ``tokenizer_source``: mergekit builds the output's vocabulary (the base's, the union, or a model's)
and re-indexes each model's ``embed_tokens``/``lm_head`` rows to it. merge-rs does not re-index rows, so it runs
the field only where re-indexing is the identity: every model's ``tokenizer.json`` holds the same vocabulary,
with one embedding row per token. Anything else is a one-line error, never a silently different merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .source import RecipeSource

MAX_TOKENIZER_BYTES = 64 << 20
FIELD = ("tokenizer_source",)


def check_tokenizer_source(source: RecipeSource, models: list[Path]) -> str | None:
    """Refuse ``tokenizer_source`` unless ``models`` (every model the config reads, the base among them) share
    one vocabulary that fills their embeddings exactly; then a warning saying what it means here."""
    value = source.data.get("tokenizer_source")
    if value is None:
        return None
    reasons = "merge-rs does not re-index embedding rows yet, as mergekit does for it"
    if value not in ("base", "union"):  # a model's tokenizer
        from .job import resolve_model

        models = [*models, resolve_model(str(value), source, FIELD)]
    vocabularies = [(model, _vocabulary(source, model, reasons)) for model in dict.fromkeys(models)]
    first, vocabulary = vocabularies[0]
    for model, other in vocabularies[1:]:
        if other != vocabulary:
            missing = next(iter(sorted(set(vocabulary) ^ set(other))), None)
            what = f"'{missing}' is in one only" if missing else "the same tokens have other ids"
            raise source.error(FIELD, f"the vocabularies of {first} and {model} differ ({what}); {reasons}")
    for model, _ in vocabularies:
        rows = _embedding_rows(model)
        if rows is not None and rows != len(vocabulary):
            raise source.error(FIELD, f"{model} has {rows} embedding rows for {len(vocabulary)} tokens; mergekit "
                                      f"would resize them to the vocabulary, and {reasons}")
    return (f"tokenizer_source: every model has the same {len(vocabulary):,}-token vocabulary, so it changes no "
            "weight; the output's tokenizer files are the first model's")


def _vocabulary(source: RecipeSource, model: Path, reasons: str) -> dict[str, int]:
    """Token → id from the model's ``tokenizer.json`` (its model's vocabulary and its added tokens)."""
    path = model / "tokenizer.json" if model.is_dir() else model.parent / "tokenizer.json"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TOKENIZER_BYTES + 1)
    except OSError:
        raise source.error(FIELD, f"{model} has no tokenizer.json to compare vocabularies with; {reasons}") from None
    if len(raw) > MAX_TOKENIZER_BYTES:
        raise source.error(FIELD, f"{path} is over {MAX_TOKENIZER_BYTES >> 20} MB")
    try:
        data: Any = json.loads(raw)
        vocab = data["model"]["vocab"]
        tokens = dict(vocab) if isinstance(vocab, dict) else {entry[0]: i for i, entry in enumerate(vocab)}
        tokens.update({t["content"]: t["id"] for t in data.get("added_tokens") or []})
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        raise source.error(FIELD, f"{path} is not a tokenizer.json with a vocabulary") from None
    return tokens


def _embedding_rows(model: Path) -> int | None:
    """``vocab_size`` from the model's ``config.json``, as mergekit reads it."""
    try:
        config = json.loads((model / "config.json").read_bytes()[: 1 << 20])
    except (OSError, ValueError):
        return None
    size = config.get("vocab_size") if isinstance(config, dict) else None
    if size is None and isinstance(config, dict) and isinstance(config.get("text_config"), dict):
        size = config["text_config"].get("vocab_size")
    return size if isinstance(size, int) else None
