"""mergekit's ``tokenizer_source``: where every model has the same vocabulary (one embedding row per token) it
changes no weight; where vocabularies differ, the embedding rows are re-indexed to the output's vocabulary as
``mergekit-yaml`` re-indexes them (the base's, the union, a model's), with the same tensors and tokenizer. A model
without a tokenizer has the base's vocabulary, as in mergekit; a base without one is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import cli, load
from test_recipe_mergekit import assert_same, llama, run_both  # noqa: F401 - llama is a fixture

pytestmark = pytest.mark.slow  # runs mergekit-yaml


def _with_tokenizer(models: list[Path], root: Path, rename: dict[str, str] | None = None,
                    renamed: tuple[str, ...] = ("b",)) -> list[Path]:
    """Copies of ``models`` with one 64-token word-level tokenizer each (the llama stand-ins' vocab_size), tokens
    renamed as ``rename`` says in the copies of the ``renamed`` models."""
    from tokenizers import Tokenizer, models as token_models
    from transformers import PreTrainedTokenizerFast

    copies = []
    for i, model in enumerate(models):
        vocab = {f"tok{j}": j for j in range(64)}
        if rename and model.name in renamed:
            vocab = {rename.get(token, token): j for token, j in vocab.items()}
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(token_models.WordLevel(vocab, unk_token="tok0")),
                                            unk_token="tok0")
        copy = root / model.name
        shutil.copytree(model, copy)
        tokenizer.save_pretrained(copy)
        copies.append(copy)
    return copies


def _config(models: list[Path], source: str) -> dict:
    base, a, b, _ = (str(m) for m in models)
    return {"merge_method": "task_arithmetic", "base_model": base, "dtype": "float32", "tokenizer_source": source,
            "models": [{"model": a, "parameters": {"weight": 0.6}}, {"model": b, "parameters": {"weight": 0.4}}]}


@pytest.mark.parametrize("source", ["base", "union"])
def test_one_shared_vocabulary_gives_mergekits_tensors(source, llama, tmp_path):  # noqa: F811
    models = _with_tokenizer(llama, tmp_path / "models")
    assert_same(*run_both(tmp_path, _config(models, source)))
    (tmp_path / "config.yml").write_text(yaml.safe_dump(_config(models, source)))
    shown = cli("run", tmp_path / "config.yml", "--dry-run").stdout
    assert "warning: tokenizer_source: every model has the same 64-token vocabulary" in shown, shown


def _refusal(tmp_path: Path, config: dict) -> str:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    done = cli("run", path, "--out", tmp_path / "out", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "tokenizer_source" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
    return done.stderr


def _vocab(model: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model).get_vocab()


@pytest.mark.parametrize("source", ["base", "union", "b"])
def test_vocabularies_that_differ_are_re_indexed_as_mergekit_does(source, llama, tmp_path):  # noqa: F811
    """Model b calls its last token ``<|im_end|>`` (a ChatML fine-tune): the union has 65 tokens, and b's row for
    ``tok63`` (which it lacks) is the base's row; with b's tokenizer the others lack ``<|im_end|>``."""
    models = _with_tokenizer(llama, tmp_path / "models", rename={"tok63": "<|im_end|>"})
    config = _config(models, str(models[2]) if source == "b" else source)
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    rows = {"base": 64, "union": 65, "b": 64}[source]
    assert ours["model.embed_tokens.weight"].shape[0] == rows
    assert _vocab(tmp_path / "ours") == _vocab(tmp_path / "theirs")
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert written["vocab_size"] == json.loads((tmp_path / "theirs" / "config.json").read_text())["vocab_size"] == rows
    assert not [p for p in tmp_path.iterdir() if ".vocabulary-" in p.name], "the scratch directory is removed"


def test_a_token_two_models_add_gets_the_mean_of_their_rows_as_in_mergekit(llama, tmp_path):  # noqa: F811
    """a and b both call their last token ``<|im_end|>``, which the base lacks: the union's row for it is, in the
    base's copy, the mean of a's and b's rows; and ``tok63``, which only the base has, is the base's row in both."""
    models = _with_tokenizer(llama, tmp_path / "models", rename={"tok63": "<|im_end|>"}, renamed=("a", "b"))
    ours, theirs = run_both(tmp_path, _config(models, "union"))
    assert_same(ours, theirs)
    assert ours["model.embed_tokens.weight"].shape[0] == 65
    before = sorted(p.name for p in tmp_path.iterdir())
    shown = cli("run", tmp_path / "config.yml", "--dry-run").stdout
    assert "model.embed_tokens.weight re-indexed to the output's 65-row vocabulary" in shown, shown
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a dry run writes nothing"


def test_a_tokenizer_block_gives_mergekits_tensors(llama, tmp_path):  # noqa: F811
    """mergekit's ``tokenizer`` block: a token added with another token's row of the base, a row forced to zeros,
    a missing token's row taken from the base's copy of another token, and the vocabulary padded to a multiple of
    8 with the mean row."""
    models = _with_tokenizer(llama, tmp_path / "models", rename={"tok63": "<|im_end|>"})
    base = str(models[0])
    config = _config(models, "union")
    del config["tokenizer_source"]
    config["tokenizer"] = {"source": "union", "pad_to_multiple_of": 8, "tokens": {
        "<|im_end|>": {"source": {"kind": "model_token", "model": base, "token": "tok63"}},
        "tok5": {"source": {"kind": "zero"}, "force": True},
        "<|new|>": {"source": {"kind": "model_token", "model": base, "token_id": 7}}}}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    assert ours["model.embed_tokens.weight"].shape[0] == 72  # 66 tokens, padded
    assert not ours["model.embed_tokens.weight"][5].any()
    assert _vocab(tmp_path / "ours") == _vocab(tmp_path / "theirs")


def test_a_config_vocab_size_past_the_rows_is_re_indexed_as_mergekit_does(llama, tmp_path):  # noqa: F811
    padded = _with_tokenizer(llama, tmp_path / "padded")
    config_path = padded[2] / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "vocab_size": 72}))
    assert_same(*run_both(tmp_path, _config(padded, "base")))


def test_a_model_without_a_tokenizer_has_the_bases_vocabulary_as_in_mergekit(llama, tmp_path):  # noqa: F811
    """Model a ships no tokenizer: mergekit, unable to load one, gives it the base's vocabulary; a base without
    one (the stand-ins as built) is refused in one line."""
    models = _with_tokenizer(llama, tmp_path / "models", rename={"tok63": "<|im_end|>"})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (models[1] / name).unlink(missing_ok=True)
    (tmp_path / "config.yml").write_text(yaml.safe_dump(_config(models, "union")))
    shown = cli("run", tmp_path / "config.yml", "--dry-run").stdout
    assert f"{models[1]} has no tokenizer; it is taken to have {models[0]}'s vocabulary" in shown, shown
    assert_same(*run_both(tmp_path, _config(models, "union")))
    assert "has no tokenizer.json" in _refusal(tmp_path / "bare", _config(llama, "base"))


@pytest.mark.parametrize("kind", ["passthrough", "task_arithmetic", "slice_base"])
def test_a_frankenmerge_of_vocabularies_that_differ_is_re_indexed_as_mergekit_does(kind, llama, tmp_path):  # noqa: F811
    """With slices, the embeddings come from the first slice's sources and the head from the last one's, and a
    token some of them lack gets its default row from those models and that slice's base (b lacks ``tok63``).
    Without a base model mergekit takes the union's base tokenizer from a set, so passthrough names b's."""
    base, a, b, _ = (str(m) for m in _with_tokenizer(llama, tmp_path / "models", rename={"tok63": "<|im_end|>"}))
    if kind == "passthrough":
        config = {"merge_method": "passthrough", "dtype": "float32", "tokenizer_source": b,
                  "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                             {"sources": [{"model": b, "layer_range": [1, 4]}]}]}
    else:
        sources = lambda span, order: [{"model": m, "layer_range": span, "parameters": {"weight": w}}  # noqa: E731
                                       for m, w in zip(order, (1.0, 0.5, 0.3))]
        config = {"merge_method": "task_arithmetic", "base_model": base, "dtype": "float32", "tokenizer_source": "union",
                  "slices": [{"sources": sources([0, 2], (base, a, b))}, {"sources": sources([2, 4], (b, base, a))}]}
        if kind == "slice_base":
            config["slices"][1]["base_model"] = b
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    assert ours["lm_head.weight"].shape[0] == 65 - (kind == "passthrough")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["vocab_size"] == ours["lm_head.weight"].shape[0]


def _bpe_with_tokens_past_the_rows(models: list[Path], root: Path) -> list[Path]:
    """Copies of the 64-row stand-ins with one BPE tokenizer: 64 tokens the rows hold (letters, digits, "ab", "cd"),
    then the special tokens ``<|im_start|>`` and ``<|im_end|>`` at ids 64 and 65, past the rows."""
    from tokenizers import Tokenizer, models as token_models
    from transformers import PreTrainedTokenizerFast

    symbols = [*"abcdefghijklmnopqrstuvwxyz", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"0123456789", "ab", "cd"]
    bpe = Tokenizer(token_models.BPE({t: i for i, t in enumerate(symbols)}, [("a", "b"), ("c", "d")]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    copies = []
    for model in models:
        shutil.copytree(model, root / model.name)
        tokenizer.save_pretrained(root / model.name)
        copies.append(root / model.name)
    return copies


def test_a_base_tokenizer_with_ids_past_its_rows_is_stripped_as_mergekit_strips_it(llama, tmp_path):  # noqa: F811
    """With ``base``, the tensors and tokenizer are mergekit's. With ``union`` mergekit 0.1.5 fails (a KeyError on
    the other models' ids past their rows); merge-rs leaves those ids out of every model's rows, as it does for
    ``base``."""
    models = _bpe_with_tokens_past_the_rows(llama, tmp_path / "models")
    assert len(_vocab(models[0])) == 66
    ours, theirs = run_both(tmp_path, _config(models, "base"))
    assert_same(ours, theirs)
    assert ours["model.embed_tokens.weight"].shape[0] == 64
    assert _vocab(tmp_path / "ours") == _vocab(tmp_path / "theirs")
    (tmp_path / "union.yml").write_text(yaml.safe_dump(_config(models, "union")))
    cli("run", tmp_path / "union.yml", "--out", tmp_path / "union", "--quiet")
    union = load(tmp_path / "union")
    assert all(np.array_equal(union[k], ours[k]) for k in ours)


def _adapter(model: Path, out: Path, seed: int, embeddings: bool) -> Path:
    """A PEFT adapter (random A and B) over the Llama at ``model``: on attention and MLP projections, and with
    ``embeddings`` on ``embed_tokens`` as well (LoRA) and ``lm_head`` (saved whole)."""
    import peft
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    targets = ["q_proj", "v_proj", "down_proj", *(["embed_tokens"] if embeddings else [])]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False,
                             modules_to_save=["lm_head"] if embeddings else None)
    tuned = peft.get_peft_model(LlamaForCausalLM.from_pretrained(model), config)
    if embeddings:
        with torch.no_grad():
            tuned.base_model.model.lm_head.modules_to_save["default"].weight.mul_(1.5)
    tuned.save_pretrained(out)
    return out


@pytest.mark.parametrize("over", ["model", "model, embeddings too", "base", "token rows"])
def test_re_indexing_reads_rows_through_a_lora_as_mergekit_does(over, llama, tmp_path):  # noqa: F811
    """model+lora with vocabularies that differ: as in mergekit, the input's vocabulary is its model's, its rows
    are read with the adapter applied (a LoRA on embed_tokens, lm_head saved whole) before they are re-indexed,
    and the adapter changes the rest of the model as it would without re-indexing. A ``tokenizer`` block's token
    can take its row from a model+lora input, named as the config names it."""
    models = _with_tokenizer(llama, tmp_path / "models", rename={"tok63": "<|im_end|>"})
    config = _config(models, "union")
    target = models[0] if over == "base" else models[2]
    adapter = str(_adapter(target, tmp_path / "lora", seed=1, embeddings=over != "model"))
    if over == "base":
        config["base_model"] += "+" + adapter
    else:
        config["models"][1]["model"] += "+" + adapter
    if over == "token rows":  # b's <|im_end|> row for every model, b+lora's tok0 row for tok1
        source = config.pop("tokenizer_source")
        b = config["models"][1]["model"]
        config["tokenizer"] = {"source": source, "tokens": {
            "<|im_end|>": {"source": b, "force": True},
            "tok1": {"source": {"kind": "model_token", "model": b, "token": "tok0"}, "force": True}}}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    assert ours["model.embed_tokens.weight"].shape[0] == 65
    assert not [p for p in tmp_path.iterdir() if ".vocabulary-" in p.name], "the scratch directory is removed"
