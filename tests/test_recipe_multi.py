"""mergekit-multi configs (several YAML documents, named intermediate merges) run through ``merge-rs run`` as one
job: the same tensors as ``mergekit-multi`` itself, in dependency order whatever the documents' order, and every
mistake a one-line error before anything is written."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import cli, load
from test_recipe_mergekit import BIN, OFFLINE, assert_same, llama  # noqa: F401 - llama is a fixture

pytestmark = pytest.mark.slow  # runs mergekit-multi


def _write(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def _documents(llama: list[Path]) -> list[dict[str, Any]]:
    """The final merge first: it reads 'pair' (which reads 'mix') and 'mix' itself, so the order is not the file's."""
    base, a, b, c = (str(p) for p in llama)
    return [
        {"merge_method": "task_arithmetic", "base_model": base, "dtype": "float32", "parameters": {"lambda": 0.8},
         "models": [{"model": "pair", "parameters": {"weight": 0.6}}, {"model": "mix", "parameters": {"weight": 0.4}},
                    {"model": c, "parameters": {"weight": 0.3}}]},
        {"name": "pair", "merge_method": "ties", "base_model": base, "dtype": "float32",
         "models": [{"model": "mix", "parameters": {"weight": 1.0, "density": 0.5}},
                    {"model": b, "parameters": {"weight": 0.7, "density": 0.6}}]},
        {"name": "mix", "merge_method": "linear", "dtype": "float32",
         "models": [{"model": a, "parameters": {"weight": 0.25}}, {"model": b, "parameters": {"weight": 0.75}}]},
    ]


def test_a_multi_document_config_gives_mergekit_multis_tensors(llama, tmp_path):  # noqa: F811
    config = _write(tmp_path / "multi.yml", _documents(llama))
    done = cli("run", config, "--out", tmp_path / "ours", "-I", tmp_path / "ours-steps", "--quiet")
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["mix", "pair", "the final merge"]
    theirs = subprocess.run([str(BIN / "mergekit-multi"), str(config), "--out-path", str(tmp_path / "theirs"),
                             "-I", str(tmp_path / "theirs-steps"), "--no-copy-tokenizer"],
                            capture_output=True, text=True, env=OFFLINE)
    assert theirs.returncode == 0, theirs.stderr[-2000:]
    for name in ("mix", "pair"):
        assert_same(load(tmp_path / "ours-steps" / name), load(tmp_path / "theirs-steps" / name))
    assert_same(load(tmp_path / "ours"), load(tmp_path / "theirs"))
    # each output's card holds a recipe that merges it again
    again = cli("run", tmp_path / "ours" / "README.md", "--out", tmp_path / "again", "--quiet")
    assert again.returncode == 0
    assert_same(load(tmp_path / "again"), load(tmp_path / "ours"))
    # an existing intermediate merge is never reused as it is: re-running needs --overwrite
    rerun = cli("run", config, "--out", tmp_path / "ours", "-I", tmp_path / "ours-steps", check=False)
    assert rerun.returncode == 1 and "ours-steps/mix: output already exists" in rerun.stderr, rerun.stderr


def test_a_dry_run_plans_what_it_can_and_writes_nothing(llama, tmp_path):  # noqa: F811
    config = _write(tmp_path / "multi.yml", _documents(llama))
    shown = cli("run", config, "--out", tmp_path / "o", "-I", tmp_path / "steps", "--dry-run").stdout
    assert "== mix →" in shown and "method: generalized_task_arithmetic; reads mix" in shown, shown
    assert not (tmp_path / "o").exists() and not (tmp_path / "steps").exists()


def _error(tmp_path: Path, documents: list[dict[str, Any]], *args: object) -> str:
    config = _write(tmp_path / "bad.yml", documents)
    done = cli("run", config, *args, check=False)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not any(p.name in ("o", "steps") for p in tmp_path.iterdir())
    return done.stderr


def test_mistakes_are_one_line_errors_before_any_merge(llama, tmp_path):  # noqa: F811
    docs = _documents(llama)
    out, steps = ("--out", tmp_path / "o"), ("-I", tmp_path / "steps")
    assert "--intermediate-dir" in _error(tmp_path, docs, *out)
    assert "--out" in _error(tmp_path, docs, *steps)
    assert "a second merge named 'mix'" in _error(tmp_path, [*docs, docs[2]], *out, *steps)
    assert "3 documents have no name" in _error(tmp_path, [docs[0], docs[0], docs[0]], *out, *steps)
    cycle = [docs[0], {**docs[1], "models": [{"model": "mix"}]}, {**docs[2], "models": [{"model": "pair"}]}]
    assert "cycle: " in _error(tmp_path, cycle, *out, *steps)
    itself = [docs[0], docs[1], {**docs[2], "models": [{"model": "mix"}]}]
    assert "cannot read itself" in _error(tmp_path, itself, *out, *steps)
    assert "overrides need a one-document recipe" in _error(tmp_path, docs, "dtype=float16", *out, *steps)
    assert "must not hold one another" in _error(tmp_path, docs, "--out", tmp_path / "steps" / "final", *steps)
    assert "model '" in _error(tmp_path, [docs[0], docs[1], {**docs[2], "models": [{"model": "missing", "parameters": {"weight": 1.0}}]}],
                               *out, *steps)
    unnamed = {k: v for k, v in docs[2].items() if k != "name"}
    assert "--intermediate-dir is for a multi-document config" in _error(tmp_path, [unnamed], *out, *steps)
    own = {"name": "own", "method": "task_arithmetic", "models": [str(llama[1])]}
    assert "is a mergekit config" in _error(tmp_path, [docs[0], docs[1], docs[2], own], *out, *steps)
