"""Never lose a user's data, never write a silently wrong model: one test per finding of the fault audit."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli, save

import merge_rs
from merge_rs.clip.pool import zoo_directory

MARKER = ".merge-rs-output"


def ta(pre, fts, *extra):
    return ["merge", "task_arithmetic", "--pretrained", pre, *[a for f in fts for a in ("--model", f)], *extra]


def one_line_error(result, *needles):
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(directory):
    return sorted((str(p.relative_to(directory)), p.stat().st_size) for p in directory.rglob("*"))


# 1. Commands that write check their output against every input, through the engine's output helper.
@pytest.fixture
def zoo_copy(tmp_path):
    return shutil.copytree(zoo_directory(), tmp_path / "zoo")


@pytest.mark.parametrize("command", [
    ["regmean", "--device", "cpu"],
    ["fisher", "--device", "cpu"],
    ["adamerging", "--device", "cpu", "--steps", "0"],
])
@pytest.mark.slow
def test_learned_commands_never_write_over_their_pool(zoo_copy, command):
    before = snapshot(zoo_copy)
    for out in (zoo_copy, zoo_copy / "models"):
        result = cli(*command, "--pool", zoo_copy, "--out", out, "--overwrite", check=False)
        one_line_error(result, "must not be one of the inputs")
    assert snapshot(zoo_copy) == before


def test_reports_never_replace_an_input(zoo_copy):
    weights = zoo_copy / "models" / "mnist" / "model.safetensors"
    before = weights.read_bytes()
    result = cli("eval", "pretrained", "--pool", zoo_copy, "--limit", "2", "--report", weights, check=False)
    one_line_error(result, "must not be one of the inputs")
    result = cli("demo", "--pool", zoo_copy, "--no-learned", "--limit", "2", "--report", zoo_copy / "r.json",
                 check=False)
    one_line_error(result, "must not be one of the inputs")
    assert weights.read_bytes() == before and not (zoo_copy / "r.json").exists()


# 2. A target that appears while a merge runs is never replaced; of concurrent writers, one fails.
@pytest.mark.slow
def test_concurrent_writers_to_one_output_do_not_both_succeed(tmp_path):
    from merge_rs.synthetic import make_model_set

    pretrained, fts = make_model_set(tmp_path / "set", "vit-b-32", 2)
    args = [sys.executable, "-m", "merge_rs.cli", "merge", "ties", "--pretrained", pretrained,
            *[a for f in fts for a in ("--model", f)], "--out", tmp_path / "out", "--quiet"]
    procs = [subprocess.Popen(list(map(str, args)), stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1], results
    assert "already exists" in next(err for code, err in results if code)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


# 3. --overwrite replaces only a merge-rs output holding nothing else; inputs inside the target are errors.
def test_overwrite_never_deletes_what_merge_rs_did_not_write(tmp_path, models):
    pre, fts, _ = models
    out = tmp_path / "out"
    cli(*ta(pre, fts, "--out", out))
    assert (out / MARKER).is_file()
    (out / "precious.txt").write_text("mine")
    one_line_error(cli(*ta(pre, fts, "--out", out, "--overwrite"), check=False), "'precious.txt'")
    assert (out / "precious.txt").read_text() == "mine"


def test_inputs_inside_the_target_are_errors(tmp_path, models):
    pre, fts, _ = models
    out = tmp_path / "out"
    cli(*ta(pre, fts, "--out", out))
    (out / "w.json").write_text(json.dumps({"coefficients": {}, "default": [0.1, 0.2]}))
    result = cli(*ta(pre, fts, "--out", out, "--overwrite", "--coefficients-file", out / "w.json"), check=False)
    one_line_error(result, "must not be one of the inputs")
    pool = out / "pool.json"
    pool.write_text(json.dumps({"pretrained": str(pre), "models": {"a": str(fts[0]), "b": str(fts[1])}}))
    result = cli("merge", "task_arithmetic", "--pool", pool, "--out", out, "--overwrite", check=False)
    one_line_error(result, "must not be one of the inputs")
    assert pool.is_file() and (out / "w.json").is_file()


# 4. A FIFO as an input, or named by an index, is refused at once (it would block forever).
def test_fifos_are_refused(tmp_path, models):
    pre, fts, _ = models
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "model.safetensors")
    result = subprocess.run([sys.executable, "-m", "merge_rs.cli", *map(str, ta(pre, [fts[0], fifo_dir],
                            "--out", tmp_path / "o"))], capture_output=True, text=True, timeout=30)
    one_line_error(result, "not a regular file")
    indexed = tmp_path / "indexed"
    indexed.mkdir()
    os.mkfifo(indexed / "a.safetensors")
    (indexed / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "a.safetensors"}}))
    result = subprocess.run([sys.executable, "-m", "merge_rs.cli", "info", str(indexed)], capture_output=True,
                            text=True, timeout=30)
    one_line_error(result, "not a regular file")


# 5. Header sizes are capped before parsing.
def test_headers_with_too_many_tensors_are_refused(tmp_path):
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(200_001)}
    text = json.dumps(header).encode()
    path = tmp_path / "big.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text)
    one_line_error(cli("info", path, check=False), "declares 200001 tensors")


# 6. --threads is bounded.
def test_thread_counts_are_bounded(tmp_path, models):
    pre, fts, _ = models
    one_line_error(cli(*ta(pre, fts, "--out", tmp_path / "o", "--threads", "10000000"), check=False), "per core")
    with pytest.raises(merge_rs.InvalidArgumentError, match="threads must be ≥ 0"):
        merge_rs.cosine_similarity(pre, fts, threads=-1)


# 7. (SIGTERM and SIGHUP: test_runtime.py.) Temporary siblings of killed processes are cleaned up.
def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, models):
    pre, fts, _ = models
    stale = tmp_path / ".out.merge-rs-999999999-5"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    cli(*ta(pre, fts, "--out", tmp_path / "out"))
    assert not stale.exists()


# 9. Non-finite inputs are caught in the pass that reads them, whatever the method does with them.
@pytest.mark.parametrize("method", [["ties"], ["dare_ties"], ["dare", "--drop-rate", "0.99", "--seed", "1"]])
def test_nan_inputs_are_never_merged_silently(tmp_path, models, method):
    pre, fts, base = models
    bad = save(tmp_path / "nan", {**base, "w": np.where(np.arange(12).reshape(4, 3) == 5, np.nan, base["w"])})
    args = ["merge", *method, "--pretrained", pre, "--model", fts[0], "--model", bad, "--out", tmp_path / "o"]
    one_line_error(cli(*args, check=False), "non-finite", "'w'")
    report = json.loads(cli(*args, "--allow-nonfinite", "--json").stdout)
    assert report["nonfinite_inputs"] == 1


# 10. Finite inputs that give non-finite results fail; parameters are checked up front.
@pytest.mark.parametrize("scale, extra, needle", [
    (3e38, ["simple_average"], "non-finite value(s) as float32"),
    (7e4, ["simple_average", "--dtype", "float16"], "as float16"),
    (1.0, ["weighted_average", "--weights", "1e308,1e308"], "sum overflows"),
    (1.0, ["dare", "--scaling-factor", "1e39"], "'scaling_factor' must be a finite number"),
])
def test_overflows_and_out_of_range_parameters_fail(tmp_path, scale, extra, needle):
    big = {"w": np.full((2, 2), scale, dtype=np.float32)}
    pre, a, b = (save(tmp_path / n, big) for n in ("pre", "a", "b"))
    needs_base = extra[0] == "dare"
    args = ["merge", *extra, *(["--pretrained", pre] if needs_base else []), "--model", a, "--model", b]
    one_line_error(cli(*args, "--out", tmp_path / "o", check=False), needle)


def test_fisher_merging_with_zero_fisher_fails_instead_of_writing_nan(tmp_path, models):
    _, fts, base = models
    zero = [save(tmp_path / f"f{i}", {k: np.zeros_like(v) for k, v in base.items()}) for i in range(2)]
    args = ["merge", "fisher_merging", *[a for f in fts for a in ("--model", f)],
            *[a for f in zero for a in ("--fisher", f / "model.safetensors")], "--epsilon", "0"]
    one_line_error(cli(*args, "--out", tmp_path / "o", check=False), "non-finite", "division by zero")
    one_line_error(cli(*args, "--epsilon", "1", "--weights", "0,0", "--out", tmp_path / "o", check=False),
                   "weights are all 0")


def test_nonfinite_outputs_are_counted_over_the_whole_merge(tmp_path, models):
    pre, fts, base = models
    nan = {k: np.full_like(v, np.nan) for k, v in base.items()}
    bad = save(tmp_path / "nan", nan)
    report = merge_rs.merge("ties", [fts[0], bad], tmp_path / "o", pretrained=pre, trim="per-tensor",
                            allow_nonfinite=True)
    assert report.nonfinite_inputs == 15, "every NaN of both tensors, not only the last tensor's"


# 11. Index entries stay inside the model's directory.
def test_index_entries_outside_the_directory_are_refused(tmp_path, models):
    pre, fts, _ = models
    model = tmp_path / "sharded"
    model.mkdir()
    for entry in ["../ft0/model.safetensors", str(fts[0] / "model.safetensors"), ".", "../nothing.safetensors"]:
        (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": entry}}))
        one_line_error(cli("info", model, check=False), "not a file inside the model directory")


# 12. With both model.safetensors and an index, merge-rs reads what transformers loads.
def test_model_safetensors_wins_over_an_index(tmp_path):
    model = save(tmp_path / "both", {"single": np.zeros(2, dtype=np.float32)})
    save(tmp_path / "shard", {"sharded": np.zeros(2, dtype=np.float32)})
    shutil.copy(tmp_path / "shard" / "model.safetensors", model / "a.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"sharded": "a.safetensors"}}))
    assert [t.name for t in merge_rs.inspect(model).tensors] == ["single"]


# The smaller findings.
def test_nan_parameters_name_the_parameter(tmp_path, models):
    pre, fts, _ = models
    with pytest.raises(merge_rs.InvalidArgumentError, match="'scaling_factor' must be a number"):
        merge_rs.merge("task_arithmetic", fts, tmp_path / "o", pretrained=pre, scaling_factor=float("nan"))


def test_non_utf8_paths_get_a_clear_error(tmp_path, models):
    pre, fts, _ = models
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    with pytest.raises(merge_rs.InvalidArgumentError, match="valid UTF-8"):
        merge_rs.merge("task_arithmetic", fts, odd, pretrained=pre)


def test_disk_full_errors_name_the_output_not_the_temporary_directory(tmp_path, models):
    pre, fts, _ = models
    from merge_rs.synthetic import make_model_set

    pretrained, big = make_model_set(tmp_path / "set", "small", 2)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    out = tmp_path / "out"
    args = [sys.executable, "-m", "merge_rs.cli", *map(str, ta(pretrained, big, "--out", out))]
    result = subprocess.run(args, capture_output=True, text=True, preexec_fn=small_files)
    line = one_line_error(result, str(out))
    assert ".merge-rs-" not in line
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_a_failed_merge_removes_the_parents_it_created(tmp_path, models):
    pre, fts, _ = models
    result = cli(*ta(pre, [fts[0], tmp_path / "missing"], "--out", tmp_path / "new" / "deeper" / "out"), check=False)
    one_line_error(result, "no such file")
    assert not (tmp_path / "new").exists()


def test_cos_sim_errors_and_undefined_similarities(tmp_path, models):
    pre, fts, base = models
    bad = save(tmp_path / "nan", {**base, "b": np.full(3, np.nan, dtype=np.float32)})
    line = one_line_error(cli("cos-sim", "--pretrained", pre, "--model", fts[0], "--model", bad, check=False),
                          "cosine similarity is undefined")
    assert "--allow-nonfinite" not in line
    text = cli("cos-sim", "--pretrained", pre, "--model", fts[0], "--model", pre).stdout
    assert "undefined" in text
    result = merge_rs.cosine_similarity(pre, [fts[0], pre])
    assert result.matrix[0][0] == pytest.approx(1.0) and result.matrix[1][1] is None
    assert result.to_csv().splitlines()[2].endswith(",nan,nan")


def test_info_escapes_control_characters_in_tensor_names(tmp_path):
    save(tmp_path / "odd", {"a\nb": np.zeros(1, dtype=np.float32)})
    listing = cli("info", tmp_path / "odd", "--tensors").stdout
    assert "a\\nb  F32  [1]" in listing


def test_checking_an_output_creates_nothing(tmp_path, models):
    from merge_rs.output import check_output

    pre, fts, _ = models
    check_output(tmp_path / "new" / "deeper" / "out", [pre, *fts])
    assert not (tmp_path / "new").exists()
    with pytest.raises(merge_rs.OutputIsInputError):
        check_output(fts[0] / "out", [pre, *fts])
