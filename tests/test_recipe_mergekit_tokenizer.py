"""mergekit's ``tokenizer_source``: run where it changes no weight (every model has the same vocabulary, one
embedding row per token), giving ``mergekit-yaml``'s tensors; refused in one line where mergekit would re-index
embedding rows (vocabularies that differ, padding rows, a model without ``tokenizer.json``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import cli
from test_recipe_mergekit import assert_same, llama, run_both  # noqa: F401 - llama is a fixture

pytestmark = pytest.mark.slow  # runs mergekit-yaml


def _with_tokenizer(models: list[Path], root: Path, rename: dict[str, str] | None = None) -> list[Path]:
    """Copies of ``models`` with one 64-token word-level tokenizer each (the llama stand-ins' vocab_size), one
    token renamed in model b's copy when ``rename`` says so."""
    from tokenizers import Tokenizer, models as token_models
    from transformers import PreTrainedTokenizerFast

    copies = []
    for i, model in enumerate(models):
        vocab = {f"tok{j}": j for j in range(64)}
        if rename and model.name == "b":
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
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    done = cli("run", path, "--out", tmp_path / "out", check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "tokenizer_source" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
    return done.stderr


def test_what_mergekit_would_re_index_is_refused_in_one_line(llama, tmp_path):  # noqa: F811
    renamed = _with_tokenizer(llama, tmp_path / "renamed", rename={"tok63": "<|im_end|>"})
    assert "'<|im_end|>' is in one only" in _refusal(tmp_path, _config(renamed, "union"))
    assert "has no tokenizer.json" in _refusal(tmp_path, _config(llama, "base"))
    padded = _with_tokenizer(llama, tmp_path / "padded")
    config_path = padded[2] / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "vocab_size": 72}))
    assert "72 embedding rows for 64 tokens" in _refusal(tmp_path, _config(padded, "base"))
