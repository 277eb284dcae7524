"""LoRA adapters in model pools: a pool whose models are PEFT adapters over its pretrained CLIP evaluates, merges,
sweeps and learns like a pool of full fine-tunes, each adapter standing for θ₀ + ΔW."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli

pytest.importorskip("torch")

from merge_rs.clip.pool import get_pool, zoo_pool  # noqa: E402

TASKS = ("mnist", "digits")


@pytest.fixture(scope="module")
def adapter_pool(tmp_path_factory) -> Path:
    """A pool file: the zoo's pretrained model, and rank-8 adapters extracted from its mnist and digits models."""
    zoo = zoo_pool()
    root = tmp_path_factory.mktemp("lora-pool")
    for task in TASKS:
        cli("extract-lora", zoo.model_path(task), "--pretrained", zoo.pretrained_path(), "--rank", "8", "--out",
            root / task, "--quiet")
    pool = {"pretrained": str(zoo.pretrained_path()), "models": {t: t for t in TASKS},
            "datasets": {t: zoo.dataset_source(t) for t in TASKS}}
    (root / "pool.json").write_text(json.dumps(pool))
    return root / "pool.json"


def accuracy(result) -> dict:
    return json.loads(result.stdout)


def test_an_adapter_evaluates_as_the_dense_model_it_stands_for(adapter_pool, tmp_path):
    """Through a pool or with --clip as its base, an adapter scores as the model that task arithmetic at λ 1 over
    it writes (θ₀ + ΔW), and not as the pretrained model."""
    pool = get_pool(adapter_pool)
    dense = tmp_path / "dense"
    cli("merge", "task_arithmetic", "--pretrained", pool.pretrained_path(), "--model", pool.model_path("mnist"),
        "--scaling-factor", "1", "--out", dense, "--quiet")
    options = ["--limit", "64", "--json", "--quiet"]
    with_clip = ["--clip", pool.pretrained_path(), "--task", f"mnist={pool.dataset_source('mnist')}", *options]
    via_pool = accuracy(cli("eval", "mnist", "--pool", adapter_pool, "--task", "mnist", *options))
    via_clip = accuracy(cli("eval", pool.model_path("mnist"), *with_clip))
    merged = accuracy(cli("eval", dense, *with_clip))
    for got in (via_pool, via_clip):
        assert got["mnist"]["accuracy"] == merged["mnist"]["accuracy"]
        assert got["mnist"]["loss"] == pytest.approx(merged["mnist"]["loss"], rel=1e-4)
    pretrained = accuracy(cli("eval", "pretrained", "--pool", adapter_pool, "--task", "mnist", *options))
    assert via_pool["mnist"]["accuracy"] != pretrained["mnist"]["accuracy"], "the adapter changed nothing"
    alone = cli("eval", pool.model_path("mnist"), "--task", "mnist", "--limit", "4", check=False)
    assert alone.returncode != 0 and "give --pool or --clip" in alone.stderr, alone.stderr


def test_an_adapter_pool_merges_sweeps_and_learns(adapter_pool, tmp_path):
    merged = cli("merge", "ties", "--pool", adapter_pool, "--out", tmp_path / "ties", "--eval", "--limit", "16",
                 "--json", "--quiet")
    assert set(TASKS) <= set(json.loads(merged.stdout)["evaluation"])
    cli("sweep", "task_arithmetic", "--pool", adapter_pool, "--param", "scaling_factor=0.5,1.0", "--limit", "16",
        "--out", tmp_path / "sweep", "--quiet")
    assert (tmp_path / "sweep").exists()
    cli("demo", "--pool", adapter_pool, "--no-learned", "--limit", "16", "--report", tmp_path / "demo.json", "--quiet")
    rows = json.loads((tmp_path / "demo.json").read_text())["rows"]
    assert {"simple_average", "ties", "pretrained"} <= set(rows), sorted(rows)
    cli("adamerging", "--pool", adapter_pool, "--mode", "task", "--steps", "2", "--out", tmp_path / "ada", "--quiet")
    weights = json.loads((tmp_path / "ada" / "merging_weights.json").read_text())
    assert weights, "AdaMerging learned its weights on the adapters' task vectors"
    cli("regmean", "--pool", adapter_pool, "--examples", "8", "--out", tmp_path / "regmean", "--quiet")
    assert (tmp_path / "regmean" / "model.safetensors").exists()



def test_fisher_merging_of_adapters_weights_the_models_they_stand_for(adapter_pool, tmp_path):
    """Each adapter is the encoder θ₀ + ΔW: the merge is Σ cᵢ(Fᵢ+ε)θᵢ / Σ cᵢ(Fᵢ+ε) over those encoders, with the
    Fisher files it kept, and not their plain average."""
    import numpy as np
    from safetensors.numpy import load_file

    pool = get_pool(adapter_pool)
    done = cli("fisher", "--pool", adapter_pool, "--examples", "16", "--fisher-dir", tmp_path / "fishers", "--json",
               "--out", tmp_path / "fisher", "--quiet")
    merged = load_file(str(tmp_path / "fisher" / "model.safetensors"))
    weights = json.loads(done.stdout)["details"]["model_coefficients"]
    thetas = [{n: p.detach().float().numpy() for n, p in pool.load_vision(t).state_dict().items()} for t in TASKS]
    fishers = [load_file(str(tmp_path / "fishers" / f"fisher_{t}.safetensors")) for t in TASKS]
    worst = apart = 0.0
    for name, got in merged.items():
        f = [w * (fi[name].astype(np.float64) + 1e-6) for w, fi in zip(weights, fishers)]
        want = sum(fi * th[name] for fi, th in zip(f, thetas)) / sum(f)
        scale = max(float(np.abs(want).max()), 1e-6)
        worst = max(worst, float(np.abs(got - want).max()) / scale)
        apart = max(apart, float(np.abs((thetas[0][name] + thetas[1][name]) / 2 - want).max()) / scale)
    assert worst < 1e-5 < apart, (worst, apart)
