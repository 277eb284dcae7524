"""mergekit's ``tokenizer_source``: mergekit builds the output's vocabulary (the base's, the union, or a model's)
and re-indexes each model's ``embed_tokens``/``lm_head`` rows to it. Where that is the identity (every model's
``tokenizer.json`` holds the same vocabulary, with one embedding row per token) the field changes no weight;
elsewhere the rows are re-indexed before the merge (``mergekit_vocab``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .mergekit_vocab import config_vocab_size
from .source import RecipeSource

MAX_TOKENIZER_BYTES = 64 << 20
FIELD = ("tokenizer_source",)


def check_tokenizer_source(source: RecipeSource, models: list[Path]) -> tuple[str | None, bool]:
    """(a warning, whether embedding rows must be re-indexed) for ``tokenizer_source``, given ``models`` (every
    model the config reads, the base among them): no re-indexing where they share one vocabulary that fills
    their embeddings exactly."""
    value = source.data.get("tokenizer_source")
    if value is None:
        return None, False
    reasons = "merge-rs compares the models' vocabularies through it"
    if value not in ("base", "union"):  # a model's tokenizer
        from .job import resolve_model

        models = [*models, resolve_model(str(value), source, FIELD)]
    vocabularies = [(model, _vocabulary(source, model, reasons)) for model in dict.fromkeys(models)]
    first, vocabulary = vocabularies[0]
    if any(other != vocabulary for _, other in vocabularies[1:]):
        return None, True
    if any(config_vocab_size(model) not in (None, len(vocabulary)) for model, _ in vocabularies):
        return None, True
    return (f"tokenizer_source: every model has the same {len(vocabulary):,}-token vocabulary, so it changes no "
            "weight; the output's tokenizer files are the first model's"), False


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
