"""Every golden case (FusionBench semantics) reproduced through the Python API and the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import GOLDEN, TASKS, assert_same, cli, load

import merge_rs

CASES = json.loads((GOLDEN / "expected" / "cases.json").read_text())["cases"]


def api_args(case: dict) -> tuple[str, dict]:
    params = {k: v for k, v in case.items() if k != "method"}
    return case["method"], params


def cli_args(case: dict) -> list[str]:
    args = [case["method"]]
    for key, value in case.items():
        if key == "method":
            continue
        if key == "normalize":
            args.append("--normalize" if value else "--no-normalize")
        elif isinstance(value, list):
            args += [f"--{key.replace('_', '-')}", ",".join(map(str, value))]
        else:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_api_reproduces_golden(golden, tmp_path, name, threads):
    method, params = api_args(CASES[name])
    report = merge_rs.merge(
        method, golden["models"], tmp_path / "out", pretrained=golden["pretrained"], threads=threads, **params
    )
    assert_same(load(tmp_path / "out"), load(golden["expected"] / f"{name}.safetensors"))
    assert report.parameters_merged == golden["cases"]["vision_param_count"]
    assert report.merged_tensors == golden["cases"]["vision_tensor_count"]
    assert [m.name for m in report.models] == TASKS


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_reproduces_golden(golden, tmp_path, name):
    models = [a for m in golden["models"] for a in ("--model", m)]
    result = cli("merge", *cli_args(CASES[name]), "--pretrained", golden["pretrained"], *models,
                 "--out", tmp_path / "out", "--json")
    report = json.loads(result.stdout)
    assert report["method"] == CASES[name]["method"]
    assert_same(load(tmp_path / "out"), load(golden["expected"] / f"{name}.safetensors"))


def test_ties_thresholds_are_the_exact_kth_values(golden, tmp_path):
    report = merge_rs.merge("ties", golden["models"], tmp_path / "out", pretrained=golden["pretrained"])
    expected = golden["cases"]["ties_threshold_values"]
    assert report.ties_thresholds == [expected[t] for t in TASKS]


def test_cosine_similarity_matches_golden(golden, tmp_path):
    with open(golden["expected"] / "cosine_similarity.csv") as f:
        rows = list(csv.reader(f))
    want = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    result = merge_rs.cosine_similarity(golden["pretrained"], golden["models"])
    assert result.names == rows[0][1:]
    np.testing.assert_allclose(np.array(result.matrix), want, rtol=1e-9, atol=1e-12)
    models = [a for m in golden["models"] for a in ("--model", m)]
    cli("cos-sim", "--pretrained", golden["pretrained"], *models, "--csv", tmp_path / "cos.csv")
    with open(tmp_path / "cos.csv") as f:
        written = list(csv.reader(f))
    assert written[0][0] == f"merge-rs {merge_rs.__version__}" and written[0][1:] == rows[0][1:]  # FusionBench's layout
    np.testing.assert_allclose(np.array([[float(v) for v in r[1:]] for r in written[1:]]), want, rtol=1e-9)


def test_output_is_a_loadable_model_directory(golden, tmp_path):
    merge_rs.merge("task_arithmetic", golden["models"], tmp_path / "out", pretrained=golden["pretrained"])
    out = tmp_path / "out"
    assert (out / "config.json").read_text() == (golden["models"][0] / "config.json").read_text()
    info = merge_rs.inspect(out)
    assert info.metadata["format"] == "pt"
    assert info.metadata["merge_method"] == "task_arithmetic"
    assert info.layout == "clip_vision"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directory left behind"
