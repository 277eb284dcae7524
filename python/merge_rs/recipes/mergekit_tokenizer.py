"""mergekit's ``tokenizer_source``: mergekit builds the output's vocabulary (the base's, the union, or a model's)
and re-indexes each model's ``embed_tokens``/``lm_head`` rows to it. Where that is the identity (every model's
``tokenizer.json`` holds the same vocabulary, with one embedding row per token) the field changes no weight;
elsewhere the rows are re-indexed before the merge (``mergekit_vocab``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mergekit_vocab import TokenSpec, config_vocab_size, has_tokenizer_files
from .source import RecipeSource

MAX_TOKENIZER_BYTES = 64 << 20
FIELD = ("tokenizer_source",)


@dataclass
class TokenizerSettings:
    """``tokenizer_source``, or the ``tokenizer`` block: the vocabulary's source, per-token rows, padding."""

    source: str | None
    tokens: dict[str, TokenSpec] = field(default_factory=dict)
    pad_to_multiple_of: int | None = None
    block: bool = False


def tokenizer_settings(source: RecipeSource) -> TokenizerSettings:
    """The config's tokenizer settings, checked (model names are resolved later); one of the two fields at most,
    as mergekit asks."""
    data = source.data
    if "tokenizer" not in data:
        return TokenizerSettings(data.get("tokenizer_source"))
    if data.get("tokenizer_source") is not None:
        raise source.error(("tokenizer",), "give tokenizer_source or tokenizer, not both (as mergekit asks)")
    block = data["tokenizer"]
    if not isinstance(block, dict) or set(block) - {"source", "tokens", "pad_to_multiple_of"}:
        raise source.error(("tokenizer",), "tokenizer has source, tokens and pad_to_multiple_of")
    value = block.get("source", "union")
    if not isinstance(value, str) or not value:
        raise source.error(("tokenizer", "source"), "source is union, base or a model")
    pad = block.get("pad_to_multiple_of")
    if pad is not None and (type(pad) is not int or pad < 1):
        raise source.error(("tokenizer", "pad_to_multiple_of"), "pad_to_multiple_of is a positive integer")
    tokens = block.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise source.error(("tokenizer", "tokens"), "tokens maps each token to {source, force}")
    specs = {str(token): _token_spec(source, spec, ("tokenizer", "tokens", token)) for token, spec in tokens.items()}
    return TokenizerSettings(value, specs, pad, True)


def _token_spec(source: RecipeSource, spec: Any, loc: tuple[Any, ...]) -> TokenSpec:
    if not isinstance(spec, dict) or set(spec) - {"source", "force"} or not isinstance(spec.get("force", False), bool):
        raise source.error(loc, "a token takes source (a model, {kind: zero} or {kind: model_token, model, "
                                "token or token_id}) and force (true or false)")
    raw, force = spec.get("source"), spec.get("force", False)
    if isinstance(raw, str) and raw:
        return TokenSpec("model", raw, None, None, force)
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "zero" and set(raw) == {"kind"}:
        return TokenSpec("zero", None, None, None, force)
    if kind == "model_token" and set(raw) <= {"kind", "model", "token", "token_id"} \
            and isinstance(raw.get("model"), str) and (raw.get("token") is None) != (raw.get("token_id") is None) \
            and (raw.get("token_id") is None or type(raw["token_id"]) is int) \
            and (raw.get("token") is None or isinstance(raw["token"], str)):
        return TokenSpec("model_token", raw["model"], raw.get("token_id"), raw.get("token"), force)
    raise source.error((*loc, "source"), "source is a model, {kind: zero}, or {kind: model_token, model, and one of "
                                         "token or token_id}")


def check_tokenizer_source(source: RecipeSource, models: list[Path]) -> tuple[list[str], bool]:
    """(warnings, whether embedding rows must be re-indexed) for ``tokenizer_source``, given ``models`` (every
    model the config reads, the base first when there is one): no re-indexing where they share one vocabulary that
    fills their embeddings exactly. A model other than the first with no tokenizer files at all is taken to have
    the first one's vocabulary, as mergekit takes it when it cannot load one."""
    settings = tokenizer_settings(source)
    value = settings.source
    if value is None:
        return [], False
    if settings.block:
        return [], True
    reasons = "merge-rs compares the models' vocabularies through it"
    named = None
    if value not in ("base", "union"):  # a model's tokenizer
        from .job import resolve_model

        named = resolve_model(str(value), source, FIELD)
        models = [*models, named]
    first = models[0]
    borrowed = [m for m in dict.fromkeys(models) if m not in (first, named) and not has_tokenizer_files(m)]
    notes = [f"tokenizer_source: {m} has no tokenizer; it is taken to have {first}'s vocabulary, as mergekit "
             "takes it" for m in borrowed]
    vocabularies = [(model, _vocabulary(source, model, reasons)) for model in dict.fromkeys(models)
                    if model not in borrowed]
    vocabulary = vocabularies[0][1]
    if any(other != vocabulary for _, other in vocabularies[1:]):
        return notes, True
    if any(config_vocab_size(model) not in (None, len(vocabulary)) for model in dict.fromkeys(models)):
        return notes, True
    return [*notes, f"tokenizer_source: every model has the same {len(vocabulary):,}-token vocabulary, so it "
                    "changes no weight; the output's tokenizer files are the first model's"], False


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
