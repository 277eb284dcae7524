"""Shared fixtures: the golden data, checkpoint writers, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOLDEN = Path(__file__).parent / "data" / "golden"
TASKS = ["task_a", "task_b", "task_c", "task_d"]
RTOL, ATOL = 1e-6, 1e-9


@pytest.fixture(scope="session")
def golden() -> dict:
    cases = json.loads((GOLDEN / "expected" / "cases.json").read_text())
    return {
        "pretrained": GOLDEN / "inputs" / "pretrained",
        "models": [GOLDEN / "inputs" / t for t in TASKS],
        "expected": GOLDEN / "expected",
        "cases": cases,
    }


def load(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint (file or directory, sharded or not) as float32 numpy arrays."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    out: dict[str, np.ndarray] = {}
    for f in files:
        for k, v in load_file(f).items():
            out[k] = v.to(torch.float32).numpy() if v.is_floating_point() else v.numpy()
    return out


def written_dtypes(directory: Path) -> set[str]:
    """The dtypes of a written model's tensors, as its safetensors header names them (BF16 → bfloat16)."""
    from safetensors import safe_open

    names = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
    with safe_open(directory / "model.safetensors", "pt") as f:
        return {names[f.get_slice(k).get_dtype()] for k in f.keys()}


def save(path: Path, tensors: dict[str, "np.ndarray"], dtype: str = "float32", config: dict | None = None) -> Path:
    """Write a HF-style model directory with ``model.safetensors`` in ``dtype`` (float tensors only)."""
    import torch
    from safetensors.torch import save_file

    torch_dtype = getattr(torch, dtype)
    path.mkdir(parents=True, exist_ok=True)
    converted = {
        k: torch.from_numpy(np.ascontiguousarray(v)).to(torch_dtype if np.issubdtype(v.dtype, np.floating) else None)
        if np.issubdtype(v.dtype, np.floating)
        else torch.from_numpy(np.ascontiguousarray(v))
        for k, v in tensors.items()
    }
    save_file(converted, str(path / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


def quantize(values: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values to ``dtype`` (round-to-nearest-even) and back to float32, as torch does."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(getattr(torch, dtype)).float().numpy()


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float = RTOL, atol: float = ATOL) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)


def cli(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``merge-rs ARGS`` in a subprocess (stdin closed, stderr not a terminal)."""
    result = subprocess.run(
        [sys.executable, "-m", "merge_rs.cli", *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"merge-rs {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture
def models(tmp_path):
    """A tiny pretrained model and two fine-tuned ones (float32 directories): (pretrained, [fine-tuned], tensors)."""
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=3).astype(np.float32)}
    pre = save(tmp_path / "base", base)
    fts = [save(tmp_path / f"ft{i}", {k: v + 0.1 * (i + 1) for k, v in base.items()}) for i in range(2)]
    return pre, fts, base


def two_linear_layers(torch):
    """A torch module of two linear layers, as PEFT adapts them."""

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(8, 6)
            self.fc = torch.nn.Linear(6, 10)

    return Tiny
