"""Iso-C, Iso-CTS and TSV-M, streamed by the engine, against the in-memory torch implementations written after
FusionBench's code (``subspace_reference``, run in float64), on a CLIP-vision-shaped random set of eight tasks.

The set is the ``small`` preset; ``MERGE_RS_SUBSPACE_PRESET=vit-b-32`` runs the comparison on the ViT-B/32 shape
(3 GB of checkpoints, a few minutes): ``benches/SUBSPACE.md`` records that run."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import merge_rs
from conftest import cli, load
from merge_rs.synthetic import make_model_set

torch = pytest.importorskip("torch")
from subspace_reference import REFERENCES, task_vectors  # noqa: E402


PRESET = os.environ.get("MERGE_RS_SUBSPACE_PRESET", "small")


@pytest.fixture(scope="module")
def eight_tasks(tmp_path_factory) -> tuple[Path, list[Path]]:
    return make_model_set(tmp_path_factory.mktemp("subspace"), PRESET, 8)


def tensors(path: Path) -> dict[str, "torch.Tensor"]:
    return {k: torch.from_numpy(v) for k, v in load(path).items()}


class Lazy:
    """A checkpoint's tensors, read one at a time in float64."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.handles = [safe_open(str(f), "pt") for f in sorted(Path(path).glob("*.safetensors"))]

    def keys(self) -> list[str]:
        return [k for h in self.handles for k in h.keys()]

    def __getitem__(self, key: str) -> "torch.Tensor":
        handle = next(h for h in self.handles if key in h.keys())
        return handle.get_tensor(key).double()


def errors(method: str, params: dict, out: Path, pretrained: Path, models: list[Path]) -> tuple[float, float]:
    """The worst relative Frobenius error against the float64 reference, tensor by tensor: of the merged task
    vector over matrices, and of the merged weights over other tensors (which float32 can only round)."""
    got, base, fine_tuned = Lazy(out), Lazy(pretrained), [Lazy(m) for m in models]
    worst = {True: 0.0, False: 0.0}
    for key in base.keys():
        b = base[key]
        want = REFERENCES[method]({key: b}, task_vectors({key: b}, [{key: m[key]} for m in fine_tuned]), **params)[key]
        matrix = want.dim() == 2
        scale = (want - b).norm() if matrix else want.norm()
        worst[matrix] = max(worst[matrix], float((got[key] - want).norm() / max(float(scale), 1e-30)))
    print(f"{method} on {PRESET}: worst relative error {worst[True]:.1e} (matrices, of θ − θ₀), "
          f"{worst[False]:.1e} (other tensors, of θ)")
    return worst[True], worst[False]


PARAMETERS = {
    "iso_c": {"scaling_factor": 0.9},
    "iso_cts": {"common_space_fraction": 0.7},
    "tsv_m": {"alpha": [0.5, 1.0, 1.5, 1.0, 0.8, 1.2, 1.0, 0.9]},
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(REFERENCES))
def test_matches_the_in_memory_torch_version(method, eight_tasks, tmp_path):
    pretrained, models = eight_tasks
    params = PARAMETERS[method]
    merge_rs.merge(method, models, tmp_path / "out", pretrained=pretrained, **params)
    matrices, others = errors(method, params, tmp_path / "out", pretrained, models)
    assert matrices <= 1e-4, f"{method}: matrices off by {matrices:.2e}"
    assert others <= 2**-23, f"{method}: other tensors off by {others:.2e} (more than float32 rounds)"


def test_excluded_matrices_are_averaged(eight_tasks, tmp_path):
    pretrained, models = eight_tasks
    key = "vision_model.embeddings.position_embedding.weight"
    merge_rs.merge("iso_c", models[:3], tmp_path / "out", pretrained=pretrained, exclude_keys=[key])
    base, fts = tensors(pretrained), [tensors(m) for m in models[:3]]
    want = base[key] + sum(f[key] - base[key] for f in fts) / 3
    np.testing.assert_allclose(tensors(tmp_path / "out")[key].numpy(), want.numpy(), rtol=1e-6, atol=1e-7)


def test_results_do_not_depend_on_the_thread_count(eight_tasks, tmp_path):
    pretrained, models = eight_tasks
    digests = set()
    for threads in (1, 2):
        out = tmp_path / f"out{threads}"
        merge_rs.merge("iso_cts", models[:4], out, pretrained=pretrained, threads=threads, memory_budget="8MB")
        digests.add(hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_the_cli_takes_per_task_alphas_and_excluded_keys(eight_tasks, tmp_path):
    pretrained, models = eight_tasks
    args = [a for m in models[:2] for a in ("--model", m)]
    cli("merge", "tsv_m", "--pretrained", pretrained, *args, "--alpha", "0.5,1.5",
        "--exclude-keys", "vision_model.embeddings.position_embedding.weight", "--out", tmp_path / "a", "--quiet")
    report = merge_rs.merge("tsv_m", models[:2], tmp_path / "b", pretrained=pretrained, alpha=[0.5, 1.5],
                            exclude_keys=["vision_model.embeddings.position_embedding.weight"])
    assert report.parameters["alpha"] == [0.5, 1.5]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_common_space_fraction_must_be_inside_zero_one(fraction, eight_tasks, tmp_path):
    pretrained, models = eight_tasks
    result = cli("merge", "iso_cts", "--pretrained", pretrained, "--model", models[0], "--model", models[1],
                 "--common-space-fraction", fraction, "--out", tmp_path / "out", check=False)
    assert result.returncode != 0
    assert "common_space_fraction' must be in (0, 1)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_matrices_of_different_shapes_are_named(tmp_path):
    from conftest import save

    rng = np.random.default_rng(0)
    base = save(tmp_path / "base", {"w": rng.normal(size=(4, 3)).astype(np.float32)})
    a = save(tmp_path / "a", {"w": rng.normal(size=(4, 3)).astype(np.float32)})
    b = save(tmp_path / "b", {"w": rng.normal(size=(3, 4)).astype(np.float32)})
    result = cli("merge", "iso_c", "--pretrained", base, "--model", a, "--model", b, "--out", tmp_path / "out",
                 check=False)
    assert result.returncode != 0 and "'w'" in result.stderr and "shape" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
