"""Sweeps (grid parsing, resume, best-point selection), the plots (valid PNGs of non-trivial size), and
evaluation on torch.distributed (``torchrun --nproc-per-node 2`` with gloo equals one process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli
import merge_rs
from merge_rs.clip.pool import zoo_directory
from merge_rs.exceptions import InvalidArgumentError
from merge_rs.methods import get_method
from merge_rs.sweep import best_point, grid, parse_axis

pytestmark = pytest.mark.slow  # sweeps merge and evaluate many points; torchrun

PNG = b"\x89PNG\r\n\x1a\n"
FAST = ["--limit", "64", "--batch-size", "16", "-q"]


def test_ranges_include_both_ends_and_lists_keep_their_order():
    ta = get_method("task_arithmetic")
    assert parse_axis("scaling_factor=0.1:1.0:0.1", ta).values == tuple(round(0.1 * i, 10) for i in range(1, 11))
    ties = get_method("ties")
    axes = [parse_axis("threshold=30,10", ties), parse_axis("merge-func=sum,mean", ties)]
    assert grid(axes) == [{"threshold": 30, "merge_func": "sum"}, {"threshold": 30, "merge_func": "mean"},
                          {"threshold": 10, "merge_func": "sum"}, {"threshold": 10, "merge_func": "mean"}]


@pytest.mark.parametrize("param, message", [
    ("scaling_factor=1:0:0.1", "--param scaling_factor: the range 1:0:0.1 is empty"),
    ("scaling_factor=0:1:0", "the range 0:1:0 is empty"),
    ("scaling_factor=", "expected NAME=START:STOP:STEP or NAME=A,B,C"),
    ("scaling_factor=a:b:c", "a range is START:STOP:STEP with numbers"),
    ("lambda=0.1,0.2", "--param lambda: task_arithmetic has no such parameter (it sweeps: scaling_factor)"),
    ("coefficients=0.1,0.2", "a float list parameter cannot be swept"),
])
def test_bad_grids_are_one_line_errors(param, message):
    result = cli("sweep", "task_arithmetic", "--pool", "zoo", "--param", param, check=False)
    assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_values_out_of_range_name_the_parameter():
    result = cli("sweep", "ties", "--pool", "zoo", "--param", "threshold=10,200", check=False)
    assert result.returncode == 1
    assert "--param threshold: 200 is out of range (expected a number in [0.0, 100.0])" in result.stderr


def test_methods_that_are_not_data_free_are_refused():
    result = cli("sweep", "fisher_merging", "--pool", "zoo", "--param", "epsilon=0.1", check=False)
    assert result.returncode == 1 and "sweep takes data-free methods" in result.stderr


def test_the_best_point_is_the_highest_on_the_chosen_score():
    report = lambda a, b: {"a": {"accuracy": a}, "b": {"accuracy": b}, "average": {"accuracy": (a + b) / 2}}  # noqa: E731
    reports = [report(0.9, 0.1), report(0.4, 0.8), report(0.5, 0.7)]
    assert best_point(reports, "average") == 1
    assert best_point(reports, "a") == 0
    assert best_point([report(0.5, 0.5), report(0.5, 0.5)], "average") == 0
    with pytest.raises(InvalidArgumentError, match="--select c: not a task of this sweep"):
        best_point(reports, "c")


def test_a_task_without_a_validation_split_is_named(tmp_path):
    pool = tmp_path / "zoo"
    shutil.copytree(zoo_directory(), pool)
    (pool / "datasets" / "symbols" / "validation.parquet").unlink()
    result = cli("sweep", "task_arithmetic", "--pool", pool, "--param", "scaling_factor=0.3", check=False)
    assert result.returncode == 1 and "task 'symbols': " in result.stderr
    assert "no parquet files for split 'validation'" in result.stderr
    assert "--split test is optimistic" in result.stderr


def test_choosing_on_the_test_split_warns():
    result = cli("sweep", "task_arithmetic", "--pool", "zoo", "--param", "scaling_factor=0.3", "--split", "test",
                 *FAST[:-1])
    assert "optimistic" in result.stderr


def test_a_sweep_resumes_from_its_report_and_writes_the_best_merge(tmp_path):
    args = ["sweep", "task_arithmetic", "--pool", "zoo", "--param", "scaling_factor=0.2,0.6", "--report",
            tmp_path / "sweep.json", *FAST]
    first = json.loads(cli(*args, "--json", "--out", tmp_path / "best").stdout)
    assert [p["parameters"] for p in first["points"]] == [{"scaling_factor": 0.2}, {"scaling_factor": 0.6}]
    averages = [p["report"]["average"]["accuracy"] for p in first["points"]]
    assert first["best"]["index"] == averages.index(max(averages))
    assert set(first["references"]) == {"pretrained", "fine-tuned (individual)"}
    assert (tmp_path / "best/model.safetensors").exists() and (tmp_path / "best/README.md").exists()
    # An interrupted sweep: the report holds the first point only; the rerun evaluates just the second.
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["generator"] == f"merge-rs {merge_rs.__version__}" and saved["points"] == first["points"]
    cut = {**saved, "points": saved["points"][:1], "best": None}
    (tmp_path / "sweep.json").write_text(json.dumps(cut))
    rerun = subprocess.run([sys.executable, "-m", "merge_rs.cli", *map(str, args[:-1]), "--json"],
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "scaling_factor=0.2: already in the report" in rerun.stderr
    assert "scaling_factor=0.6: average accuracy" in rerun.stderr
    assert json.loads(rerun.stdout)["points"] == first["points"]
    other = cli("sweep", "task_arithmetic", "--pool", "zoo", "--param", "scaling_factor=0.3", "--report",
                tmp_path / "sweep.json", *FAST, check=False)
    assert other.returncode == 1 and "is the report of another sweep (its grid differs)" in other.stderr


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000, (path, len(data))


def test_every_plot_is_a_png_of_some_size(tmp_path):
    cli("cos-sim", "--pool", "zoo", "--plot", tmp_path / "cos.png", "-q")
    cli("eval", "pretrained", "--pool", "zoo", "--limit", "64", "--plot", tmp_path / "eval.png", "-q")
    cli("sweep", "task_arithmetic", "--pool", "zoo", "--param", "scaling_factor=0.1:0.3:0.1", "--plot",
        tmp_path / "sweep.png", *FAST)
    for name in ("cos.png", "eval.png", "sweep.png"):
        assert_png(tmp_path / name)
    result = cli("cos-sim", "--pool", "zoo", "--plot", tmp_path / "cos.svg", check=False)
    assert result.returncode == 1 and "plots are PNG files" in result.stderr


def torchrun(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "merge_rs.cli", *map(str, args)], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=600)


def test_torchrun_evaluation_equals_one_process(tmp_path):
    args = ["eval", "pretrained", "--pool", "zoo", "--limit", "100", "--batch-size", "16", "--json"]
    single = json.loads(cli(*args, "-q").stdout)
    launched = torchrun(*args)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "evaluating on 2 processes" in launched.stderr
    distributed = json.loads(launched.stdout)
    for task in single:
        if task != "model_info":
            assert distributed[task]["accuracy"] == single[task]["accuracy"], task
            assert distributed[task]["loss"] == pytest.approx(single[task]["loss"], rel=1e-6), task


@pytest.mark.parametrize("spread", [False, True])
def test_torchrun_sweep_gives_identical_accuracies(spread, tmp_path):
    args = ["sweep", "task_arithmetic", "--pool", "zoo", "--param", "scaling_factor=0.2,0.5,0.8", "--json",
            *FAST[:-1]]
    single = json.loads(cli(*args, "-q").stdout)
    launched = torchrun(*args, "--out", tmp_path / "best", "--report", tmp_path / "sweep.json",
                        *(["--spread-grid"] if spread else []))
    assert launched.returncode == 0, launched.stderr[-3000:]
    distributed = json.loads(launched.stdout)
    accuracies = lambda data: [{k: v["accuracy"] for k, v in p["report"].items() if k != "model_info"}  # noqa: E731
                               for p in data["points"]]
    assert accuracies(distributed) == accuracies(single)
    assert distributed["best"] == single["best"]
    assert json.loads((tmp_path / "sweep.json").read_text())["points"] == distributed["points"]
    assert (tmp_path / "best/model.safetensors").exists()


def test_torchrun_adamerging_learns_the_single_process_weights(tmp_path):
    args = ["adamerging", "--pool", "zoo", "--mode", "layer", "--steps", "10", "-q"]
    cli(*args, "--out", tmp_path / "one")
    launched = torchrun(*args, "--out", tmp_path / "two")
    assert launched.returncode == 0, launched.stderr[-3000:]
    weights = lambda d: json.loads((d / "merging_weights.json").read_text())["coefficients"]  # noqa: E731
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    flat = lambda w: [v for per_task in w.values() for v in per_task]  # noqa: E731
    learned = max(abs(a - 0.3) for a in flat(one))
    assert learned > 1e-3  # it learned something
    # Gradients all-reduced in another order move Adam's near-zero-gradient steps a little (1.8e-4 after 10 steps,
    # 2026-12-07), so the two runs agree to a small share of what was learned.
    assert max(abs(a - b) for a, b in zip(flat(one), flat(two))) < 0.05 * learned
    losses = lambda d: [float(line.split(",")[1]) for line in (d / "loss.csv").read_text().splitlines()[1:]]  # noqa: E731
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)
