"""Bad input through the CLI: a clear one-line error naming the file or tensor, a non-zero exit, and no
output (nor temporary directory) left behind."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
from conftest import cli, save


def raw_file(path, header: dict | str, data: bytes = b""):
    text = header if isinstance(header, str) else json.dumps(header)
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text.encode() + data)
    return path


def fails(tmp_path, args, *needles, code=1):
    out = tmp_path / "out"
    result = cli("merge", *args, "--out", out, check=False)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary output left behind"
    return lines[0]


def ta(pre, fts):
    return ["task_arithmetic", "--pretrained", pre, *[a for f in fts for a in ("--model", f)]]


def test_missing_path(tmp_path, models):
    pre, fts, _ = models
    fails(tmp_path, ta(pre, [fts[0], tmp_path / "nope"]), "nope", "no such file")


def test_not_a_safetensors_file(tmp_path, models):
    pre, fts, _ = models
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_text("this is not a checkpoint at all, just text")
    fails(tmp_path, ta(pre, [fts[0], bad]), "bad/model.safetensors", "not a valid safetensors")


def test_truncated_file(tmp_path, models):
    pre, fts, _ = models
    bad = tmp_path / "trunc"
    shutil.copytree(fts[1], bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[:-5])
    fails(tmp_path, ta(pre, [fts[0], bad]), "trunc/model.safetensors", "truncated")


def test_corrupt_header_json(tmp_path, models):
    pre, fts, _ = models
    bad = raw_file(tmp_path / "json", '{"w": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]')
    fails(tmp_path, ta(pre, [fts[0], bad]), "json/model.safetensors", "corrupt header JSON")


# name: (dtype of tensor 'w', its byte length in the header, bytes on disk, bad model first?, expected words)
BAD_ENTRIES = {
    "offsets": ("F32", 480, 60, False, ["offsets/model.safetensors"]),
    "dtype": ("Q4", 48, 60, False, ["dtype/model.safetensors", "unknown dtype"]),
    "f64": ("F64", 96, 108, True, ["'w'", "F64"]),
}


@pytest.mark.parametrize("name", sorted(BAD_ENTRIES))
def test_bad_tensor_entries(tmp_path, models, name):
    """Offsets past the data, an unknown dtype, and a dtype that cannot be merged."""
    pre, fts, _ = models
    dtype, size, on_disk, first, words = BAD_ENTRIES[name]
    header = {"w": {"dtype": dtype, "shape": [4, 3], "data_offsets": [0, size]},
              "b": {"dtype": "F32", "shape": [3], "data_offsets": [size, size + 12]}}
    bad = raw_file(tmp_path / name, header, bytes(on_disk))
    fails(tmp_path, ta(pre, [bad, fts[0]] if first else [fts[0], bad]), *words)


def test_tensor_missing_from_a_model(tmp_path, models):
    pre, fts, base = models
    partial = save(tmp_path / "partial", {"w": base["w"]})
    fails(tmp_path, ta(pre, [fts[0], partial]), "partial", "'b'", "missing")
    fails(tmp_path, ta(partial, fts), "partial", "'b'", "missing")


def test_shape_mismatch(tmp_path, models):
    pre, fts, base = models
    other = save(tmp_path / "shape", {"w": np.zeros((3, 4), np.float32), "b": base["b"]})
    fails(tmp_path, ta(pre, [fts[0], other]), "shape", "'w'", "[3, 4]", "[4, 3]")


def test_too_few_models_or_no_pretrained(tmp_path, models):
    pre, fts, _ = models
    fails(tmp_path, ["simple_average", "--model", fts[0]], "at least 2")
    fails(tmp_path, ["ties", "--model", fts[0], "--model", fts[1]], "pretrained")


def test_weights_and_coefficients_counts(tmp_path, models):
    pre, fts, _ = models
    ms = [a for f in fts for a in ("--model", f)]
    fails(tmp_path, ["weighted_average", *ms, "--weights", "1,2,3"], "3 weights", "2 models")
    fails(tmp_path, [*ta(pre, fts), "--coefficients", "0.1"], "1 coefficients", "2 models")
    fails(tmp_path, ["weighted_average", *ms], "needs 'weights'")


def test_coefficients_file_missing_a_tensor(tmp_path, models):
    pre, fts, _ = models
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"coefficients": {"w": [0.1, 0.2]}}))
    fails(tmp_path, [*ta(pre, fts), "--coefficients-file", file], "c.json", "'b'")


def test_option_that_the_method_does_not_take(tmp_path, models):
    pre, fts, _ = models
    fails(tmp_path, ["simple_average", *[a for f in fts for a in ("--model", f)], "--threshold", "20"], "threshold")


def test_bad_parameter_values(tmp_path, models):
    pre, fts, _ = models
    ms = [a for f in fts for a in ("--model", f)]
    fails(tmp_path, ["ties", "--pretrained", pre, *ms, "--threshold", "120"], "threshold", "120")
    fails(tmp_path, ["dare", "--pretrained", pre, *ms, "--drop-rate", "1"], "drop rate")
    fails(tmp_path, [*ta(pre, fts), "--max-shard-size", "lots"], "lots")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_parameters(tmp_path, models, value):
    pre, fts, base = models
    w = base["w"].copy()
    w[1, 2] = value
    bad = save(tmp_path / "nan", {"w": w, "b": base["b"]})
    fails(tmp_path, ta(pre, [fts[0], bad]), "nan", "'w'", "non-finite")
    result = cli("merge", *ta(pre, [fts[0], bad]), "--out", tmp_path / "out", "--allow-nonfinite")
    assert "warning" in result.stderr and "non-finite" in result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_output_exists_unless_overwrite(tmp_path, models):
    pre, fts, _ = models
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    result = cli("merge", *ta(pre, fts), "--out", tmp_path / "out", check=False)
    assert result.returncode == 1 and "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (tmp_path / "out" / "keep.txt").exists()
    result = cli("merge", *ta(pre, fts), "--out", tmp_path / "out", "--overwrite", check=False)
    assert result.returncode == 1 and "no .merge-rs-output marker" in result.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "x", "--overwrite never deletes what merge-rs did not write"
    cli("merge", *ta(pre, fts), "--out", tmp_path / "merged")
    cli("merge", *ta(pre, fts), "--out", tmp_path / "merged", "--overwrite")
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_output_equal_to_or_inside_an_input(tmp_path, models):
    pre, fts, _ = models
    for out in (fts[0], fts[0] / "merged", pre, tmp_path):
        result = cli("merge", *ta(pre, fts), "--out", out, "--overwrite", check=False)
        assert result.returncode == 1, out
        assert "must not be one of the inputs" in result.stderr, result.stderr
    assert sorted(p.name for p in fts[0].iterdir()) == ["model.safetensors"]


def test_info_on_bad_file(tmp_path):
    result = cli("info", tmp_path / "missing.safetensors", check=False)
    assert result.returncode == 1 and "missing.safetensors" in result.stderr
