"""User errors are one line and a non-zero exit, never a traceback, and a sweep's mistakes are found before it
merges anything."""

from __future__ import annotations

import json

import pytest

from conftest import cli

SWEEP = ["sweep", "task_arithmetic", "--pool", "zoo", "--param", "scaling_factor=0.3", "--limit", "2", "--quiet"]


def _one_line(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("config,field", [("merge_method: [ties]\nmodels:\n  - model: a\n", "merge_method"),
                                          ("merge_method: linear\ndtype: [a]\nmodels:\n  - model: a\n", "dtype")])
def test_mergekit_fields_of_the_wrong_type(tmp_path, config, field):
    path = tmp_path / "config.yml"
    path.write_text(config)
    assert f"{field}: expected a name" in _one_line(cli("run", path, "--out", tmp_path / "out", check=False))


@pytest.mark.parametrize("spec,message", [({"pretrained": 5, "models": {"a": "b"}}, "'pretrained' must be"),
                                          ({"pretrained": "x", "models": {"a": 3}}, "'models' must map"),
                                          ([], "a JSON object")])
def test_pool_files_of_the_wrong_shape(tmp_path, spec, message):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(spec))
    assert message in _one_line(cli("merge", "task_arithmetic", "--pool", pool, "--out", tmp_path / "o", check=False))


@pytest.mark.parametrize("saved,message", [({"points": "abc"}, "'points' is not a list"),
                                           ({"points": [{"parameters": {}}]}, "point 0 lacks")])
def test_malformed_resume_reports(tmp_path, saved, message):
    report = tmp_path / "sweep.json"
    report.write_text(json.dumps({"generator": "merge-rs 0", **saved}))
    assert message in _one_line(cli(*SWEEP, "--report", report, check=False))
    assert json.loads(report.read_text())["points"] == saved["points"]  # left as it was


@pytest.mark.slow
def test_sweep_mistakes_are_found_before_any_merge(tmp_path):
    # An unusable device fails when the evaluator is built, before any merge: a check that comes first wins.
    early = [*SWEEP, "--device", "cuda:99"]
    assert "cuda" in _one_line(cli(*early, check=False)).lower()
    assert "--select mnistt: not a task" in _one_line(cli(*early, "--select", "mnistt", check=False))
    (tmp_path / "out").mkdir()
    assert "already exists" in _one_line(cli(*early, "--out", tmp_path / "out", check=False))
    (tmp_path / "keep" / "scaling_factor=0.3").mkdir(parents=True)
    assert "already exists" in _one_line(cli(*early, "--keep", tmp_path / "keep", check=False))


def test_a_full_standard_output_is_one_line(tmp_path):
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "merge_rs.cli", "recipe-schema"], stdout=full,
                                stderr=subprocess.PIPE, text=True)
    assert "cannot write to standard output" in _one_line(result)


@pytest.mark.slow
def test_a_killed_sweep_s_scratch_is_removed_by_the_next_one(tmp_path):
    import os
    import subprocess
    import sys

    from merge_rs.sweep import SCRATCH_PREFIX, remove_stale_scratch

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"{SCRATCH_PREFIX}{dead}-abc"
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    other = tmp_path / f"{SCRATCH_PREFIX}notapid-x"
    for d in (stale, live, other):
        (d / "merged").mkdir(parents=True)
    assert remove_stale_scratch(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    (stale / "merged").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "merge_rs.cli", *SWEEP[:-1]], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert f"removed {stale}" in result.stderr and not stale.exists() and live.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f"{SCRATCH_PREFIX}{dead}")]


def test_control_characters_from_the_command_line_are_escaped_in_errors(tmp_path):
    recipe = tmp_path / "r.yml"
    recipe.write_text("method: task_arithmetic\npool: zoo\n")
    line = _one_line(cli("run", recipe, "--out", tmp_path / "o", "param\x1b[31m\nx.y=1", check=False))
    assert "\x1b" not in line and "param\\x1b[31m\\nx" in line


@pytest.mark.parametrize("size,message", [("1e23", "cannot read size"), ("-1", "must be positive"),
                                          ("0", "must be positive")])
def test_a_dry_run_refuses_what_the_merge_would_refuse(tmp_path, size, message):
    recipe = tmp_path / "r.yml"
    recipe.write_text(f"method: task_arithmetic\npool: zoo\nmax_shard_size: {size}\n")
    for extra in (["--dry-run"], []):
        line = _one_line(cli("run", recipe, "--out", tmp_path / "o", *extra, check=False))
        assert f"{recipe}:3: max_shard_size: " in line and message in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("evaluation,message", [("{tasks: [nosuchtask]}", "unknown task 'nosuchtask'"),
                                                ("{split: nosplit}", "no parquet files for split 'nosplit'"),
                                                ("{device: 'cuda:3'}", "CUDA is not available")])
@pytest.mark.slow
def test_a_recipe_s_evaluation_is_checked_before_the_merge(tmp_path, evaluation, message):
    recipe = tmp_path / "r.yml"
    recipe.write_text(f"method: task_arithmetic\npool: zoo\nevaluation: {evaluation}\n")
    for extra in (["--dry-run"], []):
        assert message in _one_line(cli("run", recipe, "--out", tmp_path / "o", *extra, check=False))
    assert not (tmp_path / "o").exists()  # nothing merged, so the next run does not find an output in the way


@pytest.mark.slow
def test_two_sweeps_never_write_one_report(tmp_path):
    import subprocess
    import sys

    report = tmp_path / "sweep.json"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from merge_rs.sweep import SweepLog; "
                               "SweepLog(Path(sys.argv[1]), {}); print('locked', flush=True); time.sleep(60)",
                               str(report)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _one_line(cli(*SWEEP, "--report", report, check=False))
        assert "another sweep is writing this report" in line and not report.exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli(*SWEEP, "--report", report).returncode == 0 and report.exists()  # free again once it is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"], "the sweep left its lock file behind"


@pytest.mark.parametrize("weights", [".nan, 1", ".inf, 1"])
def test_a_dry_run_refuses_non_finite_weights_in_a_mergekit_config(tmp_path, weights):
    from merge_rs.clip.pool import zoo_directory

    a, b = (zoo_directory() / "models" / t for t in ("mnist", "digits"))
    first, second = (w.strip() for w in weights.split(","))
    config = tmp_path / "config.yml"
    config.write_text(f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: {first}}}\n"
                      f"  - model: {b}\n    parameters: {{weight: {second}}}\n")
    for extra in (["--dry-run"], []):
        line = _one_line(cli("run", config, "--out", tmp_path / "o", *extra, check=False))
        assert "finite" in line, line
    assert not (tmp_path / "o").exists()


def test_a_dry_run_refuses_weights_that_cannot_be_normalised(tmp_path):
    """The method's own checks (here: weights summing to 0 under normalisation) run in a dry run too."""
    from merge_rs.clip.pool import zoo_directory

    a, b = (zoo_directory() / "models" / t for t in ("mnist", "digits"))
    config = tmp_path / "config.yml"
    config.write_text(f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0}}\n"
                      f"  - model: {b}\n    parameters: {{weight: -1.0}}\n")
    for extra in (["--dry-run"], []):
        line = _one_line(cli("run", config, "--out", tmp_path / "o", *extra, check=False))
        assert "sum to 0" in line and "config.yml" in line, line
    assert not (tmp_path / "o").exists()
