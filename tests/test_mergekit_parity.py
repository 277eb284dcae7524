"""The mergekit family against mergekit itself (``mergekit-pytorch`` on raw checkpoints, installed by the test
extra): same tensors to 1e-6 for every method whose result is deterministic. DELLA draws random masks, so it is
compared only where nothing is dropped (density 1: its weights, normalisation and λ)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import merge_rs
from conftest import load, save

pytestmark = pytest.mark.slow  # each case runs mergekit

MERGEKIT = Path(sys.executable).parent / "mergekit-pytorch"
WEIGHTS = [0.7, 1.2, 0.4]


@pytest.fixture(scope="module")
def model_set(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A pretrained model and three fine-tuned ones: matrices large enough for breadcrumbs' 5 % outliers."""
    root = tmp_path_factory.mktemp("mergekit")
    rng = np.random.default_rng(7)
    shapes = {"layer.0.weight": (40, 30), "layer.0.bias": (40,), "layer.1.weight": (30, 40), "norm.weight": (30,)}
    base = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    models = [save(root / f"ft{i}", {k: v + rng.normal(scale=0.1, size=v.shape).astype(np.float32)
                                       for k, v in base.items()}) for i in range(3)]
    return save(root / "base", base), models


def mergekit(tmp: Path, method: str, base: Path | None, models: list[Path], per_model: list[dict[str, Any]],
             parameters: dict[str, Any]) -> dict[str, np.ndarray]:
    config: dict[str, Any] = {
        "merge_method": method,
        "models": [{"model": str(m / "model.safetensors"), "parameters": p} for m, p in zip(models, per_model)],
        "parameters": parameters,
        "dtype": "float32",
    }
    if base is not None:
        config["base_model"] = str(base / "model.safetensors")
    path = tmp / f"{method}.yml"
    path.write_text(json.dumps(config))
    out = tmp / f"mergekit-{method}"
    subprocess.run([str(MERGEKIT), str(path), str(out)], check=True, capture_output=True)
    return load(out)


CASES = {
    "breadcrumbs": ({"density": 0.6, "gamma": 0.05}, {"lambda": 0.8, "rescale": True}),
    "breadcrumbs_ties": ({"density": 0.5, "gamma": 0.1}, {"normalize": True}),
    "della_linear": ({"density": 1.0, "epsilon": 0.1}, {"lambda": 1.5, "normalize": True}),
    "della": ({"density": 1.0, "epsilon": 0.1}, {}),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_generalized_task_arithmetic_matches_mergekit(method, model_set, tmp_path):
    base, models = model_set
    per_model, parameters = CASES[method]
    want = mergekit(tmp_path, method, base, models, [{"weight": w, **per_model} for w in WEIGHTS], parameters)
    ours = {**per_model, **{k if k != "lambda" else "lambda_": v for k, v in parameters.items()}}
    merge_rs.merge(method, models, tmp_path / "ours", pretrained=base, weights=WEIGHTS, **ours)
    assert_close(load(tmp_path / "ours"), want)


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock_matches_mergekit(filter_wise, model_set, tmp_path):
    base, models = model_set
    want = mergekit(tmp_path, "model_stock", base, models, [{}] * 3, {"filter_wise": filter_wise})
    merge_rs.merge("model_stock", models, tmp_path / "ours", pretrained=base, filter_wise=filter_wise)
    assert_close(load(tmp_path / "ours"), want)


def test_slerp_matches_mergekit_from_its_base_model(model_set, tmp_path):
    _, models = model_set
    want = mergekit(tmp_path, "slerp", models[0], models[1:2], [{}], {"t": 0.3})
    merge_rs.merge("slerp", models[:2], tmp_path / "ours", t=0.3)
    assert_close(load(tmp_path / "ours"), want)


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_matches_mergekit(with_base, model_set, tmp_path):
    base, models = model_set
    pretrained = base if with_base else None
    want = mergekit(tmp_path, "multislerp", pretrained, models, [{"weight": w} for w in WEIGHTS], {})
    merge_rs.merge("multislerp", models, tmp_path / "ours", pretrained=pretrained, weights=WEIGHTS)
    assert_close(load(tmp_path / "ours"), want)


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        error = np.linalg.norm(got[k] - want[k]) / np.linalg.norm(want[k])
        assert error <= 1e-6, f"{k}: relative error {error:.2e}"


def test_slerp_with_three_models_is_a_one_line_error(model_set, tmp_path):
    from conftest import cli

    _, models = model_set
    result = cli("merge", "slerp", *[a for m in models for a in ("--model", m)], "--t", "0.5",
                 "--out", tmp_path / "out", check=False)
    assert result.returncode != 0
    assert result.stderr.strip() == "error: slerp takes at most 2 fine-tuned models, got 3", result.stderr
    assert not (tmp_path / "out").exists()
