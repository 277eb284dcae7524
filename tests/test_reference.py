"""The engine against the numpy reference on random models: shapes, dtypes, model counts, thread counts,
sign-election corner cases, and DARE's reproducibility."""

from __future__ import annotations

import json

import numpy as np
import pytest
import reference as ref
from conftest import load, quantize, save

import merge_rs

TOL = {"float32": (2e-6, 1e-7), "float16": (1e-3, 1e-6), "bfloat16": (8e-3, 1e-6)}


def random_set(tmp_path, seed: int, dtype: str, n: int, grid: bool = False):
    """A pretrained model and ``n`` fine-tuned ones with random shapes; returns paths and float32 values."""
    rng = np.random.default_rng(seed)
    shapes = {f"layer{i}.weight": tuple(rng.integers(1, 40, size=rng.integers(1, 3))) for i in range(rng.integers(1, 6))}
    shapes["layer0.bias"] = (int(rng.integers(1, 500)),)

    def values(scale):
        out = {}
        for k, s in shapes.items():
            v = rng.normal(0, scale, size=s).astype(np.float32)
            out[k] = np.round(v * 64) / 64 if grid else v
        return out

    base = values(0.5)
    models = [{k: base[k] + d for k, d in values(0.05).items()} for _ in range(n)]
    base = {k: quantize(v, dtype) for k, v in base.items()}
    models = [{k: quantize(v, dtype) for k, v in m.items()} for m in models]
    base_path = save(tmp_path / "base", base, dtype)
    model_paths = [save(tmp_path / f"m{i}", m, dtype) for i, m in enumerate(models)]
    return base_path, model_paths, base, models, sorted(shapes)


CONFIGS = [(seed, dtype, n, threads) for seed, (dtype, n, threads) in enumerate(
    [("float32", 1, 1), ("float32", 3, 2), ("float16", 2, 3), ("bfloat16", 4, 2), ("float32", 5, 3),
     ("bfloat16", 2, 1), ("float16", 5, 2), ("float32", 2, 3)])]


@pytest.mark.parametrize("seed,dtype,n,threads", CONFIGS)
def test_elementwise_methods_match_reference(tmp_path, seed, dtype, n, threads):
    base_path, paths, base, models, keys = random_set(tmp_path, seed, dtype, n)
    b = ref.flatten(base, keys)
    ms = [ref.flatten(m, keys) for m in models]
    coeffs = [0.1 * (i + 1) for i in range(n)]
    weights = [float(i + 1) for i in range(n)]
    cases = {
        "task_arithmetic": ({"scaling_factor": 0.7}, ref.task_arithmetic(b, ms, 0.7)),
        "coefficients": ({"coefficients": coeffs}, ref.coefficients(b, ms, coeffs)),
    }
    if n >= 2:
        cases["simple_average"] = ({}, ref.simple_average(ms))
        cases["weighted_average"] = ({"weights": weights, "normalize": False}, ref.weighted_average(ms, weights, False))
    rtol, atol = TOL[dtype]
    for name, (params, want) in cases.items():
        method = "task_arithmetic" if name == "coefficients" else name
        out = tmp_path / f"out_{name}"
        pre = base_path if method == "task_arithmetic" else None
        merge_rs.merge(method, paths, out, pretrained=pre, threads=threads, **params)
        got = ref.flatten(load(out), keys)
        np.testing.assert_allclose(got, quantize(want, dtype), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("merge_func", ["sum", "mean", "max"])
@pytest.mark.parametrize("seed,dtype,n,threads", CONFIGS[1:6])
def test_ties_matches_reference(tmp_path, seed, dtype, n, threads, merge_func):
    base_path, paths, base, models, keys = random_set(tmp_path, seed, dtype, n, grid=True)
    b = ref.flatten(base, keys)
    ms = [ref.flatten(m, keys) for m in models]
    for threshold in (20.0, 55.0):
        want, kths = ref.ties(b, ms, 0.3, threshold, merge_func)
        out = tmp_path / f"ties_{threshold}"
        report = merge_rs.merge("ties", paths, out, pretrained=base_path, threads=threads, threshold=threshold,
                                merge_func=merge_func)
        assert report.ties_thresholds == [float(k) for k in kths]
        rtol, atol = TOL[dtype]
        np.testing.assert_allclose(ref.flatten(load(out), keys), quantize(want, dtype), rtol=rtol, atol=atol)


def test_ties_per_tensor_trim_matches_reference(tmp_path):
    base_path, paths, base, models, keys = random_set(tmp_path, 11, "float32", 3, grid=True)
    sizes = np.cumsum([0] + [base[k].size for k in keys])
    groups = [slice(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    want, _ = ref.ties(ref.flatten(base, keys), [ref.flatten(m, keys) for m in models], 0.3, 20, "sum", groups)
    merge_rs.merge("ties", paths, tmp_path / "out", pretrained=base_path, trim="per-tensor")
    np.testing.assert_allclose(ref.flatten(load(tmp_path / "out"), keys), want, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("majority", [1, -1, 0])
def test_ties_sign_fallback_uses_the_whole_model_majority(tmp_path, majority, dtype):
    """Cancelling task vectors elect sign 0; the fallback is the sign of the sum of all elected signs. The
    elements waiting for it keep their values in the output's type (2 bytes each in 16-bit types)."""
    n = 4096
    base = {"w": np.zeros(n, np.float32)}
    a = np.full(n, 0.5, np.float32)
    b = -a.copy()
    # A tail where both agree sets the majority: positive, negative, or balanced (zero).
    tail = {1: [0.25] * 8, -1: [-0.25] * 8, 0: [0.25] * 4 + [-0.25] * 4}[majority]
    a[-8:] = tail
    b[-8:] = tail
    paths = [save(tmp_path / "a", {"w": a}, dtype), save(tmp_path / "b", {"w": b}, dtype)]
    pre = save(tmp_path / "base", base, dtype)
    for func in ("sum", "mean", "max"):
        want, _ = ref.ties(base["w"], [a, b], 1.0, 100.0, func)
        report = merge_rs.merge("ties", paths, tmp_path / func, pretrained=pre, threshold=100, scaling_factor=1.0,
                                merge_func=func)
        np.testing.assert_array_equal(load(tmp_path / func)["w"], quantize(want, dtype))
        assert report.ties_majority_sign == majority


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ties_patches_scattered_through_a_job(tmp_path, dtype):
    """Sign-0 elements 1,500 apart, each with its own value, in tensors longer and shorter than a job, take the
    majority sign: every patch lands on its own element."""
    out = {}
    for name, n in (("big", 200_000), ("small", 3_001)):
        a = np.full(n, 0.25, np.float32)
        b = a.copy()
        a[::1500] = 1 + np.arange(len(a[::1500])) % 7 / 8  # exact in bfloat16, and told apart
        b[::1500] = -a[::1500]
        out[name] = (a, b)
    paths = [save(tmp_path / "a", {k: v[0] for k, v in out.items()}, dtype),
             save(tmp_path / "b", {k: v[1] for k, v in out.items()}, dtype)]
    zeros = {k: np.zeros_like(v[0]) for k, v in out.items()}
    pre = save(tmp_path / "base", zeros, dtype)
    keys = sorted(out)
    want, _ = ref.ties(ref.flatten(zeros, keys), [ref.flatten({k: v[i] for k, v in out.items()}, keys) for i in (0, 1)],
                       1.0, 100.0, "sum")
    report = merge_rs.merge("ties", paths, tmp_path / "out", pretrained=pre, threshold=100, scaling_factor=1.0)
    assert report.ties_majority_sign == 1
    np.testing.assert_array_equal(ref.flatten(load(tmp_path / "out"), keys), quantize(want, dtype))


def test_ties_fallback_with_more_patches_than_fit_in_memory(tmp_path):
    """More sign-0 elements (τ_a = −τ_b, all kept) than the engine's 3 · 2^20 patches: it re-runs the merge pass
    instead of keeping them."""
    n = (3 << 20) + 8192
    rng = np.random.default_rng(5)
    a = (rng.integers(1, 8, n) / 8).astype(np.float32)
    b = -a
    b[-4096:] = a[-4096:] * np.where(rng.random(4096) < 0.3, 1, -1)  # a few agree: a clear majority
    assert (a + b == 0).sum() > 3 << 20
    pre = save(tmp_path / "base", {"w": np.zeros(n, np.float32)})
    paths = [save(tmp_path / "a", {"w": a}), save(tmp_path / "b", {"w": b})]
    want, _ = ref.ties(np.zeros(n, np.float32), [a, b], 0.3, 100, "sum")
    merge_rs.merge("ties", paths, tmp_path / "out", pretrained=pre, threads=2, threshold=100.0)
    np.testing.assert_array_equal(load(tmp_path / "out")["w"], want)


def test_dare_is_reproducible_thread_independent_and_unbiased(tmp_path):
    base_path, paths, base, models, keys = random_set(tmp_path, 3, "float32", 2)
    outs = {}
    for threads, seed in [(1, 7), (2, 7), (3, 7), (2, 8)]:
        out = tmp_path / f"dare_{threads}_{seed}"
        merge_rs.merge("dare", paths, out, pretrained=base_path, threads=threads, seed=seed, drop_rate=0.4,
                       scaling_factor=1.0)
        outs[(threads, seed)] = ref.flatten(load(out), keys)
    np.testing.assert_array_equal(outs[(1, 7)], outs[(2, 7)])
    np.testing.assert_array_equal(outs[(1, 7)], outs[(3, 7)])
    assert not np.array_equal(outs[(1, 7)], outs[(2, 8)])


def test_dare_drops_and_rescales_each_entry(tmp_path):
    n = 200_000
    rng = np.random.default_rng(0)
    tau = rng.uniform(0.5, 1.0, n).astype(np.float32)
    pre = save(tmp_path / "base", {"w": np.zeros(n, np.float32)})
    model = save(tmp_path / "m", {"w": tau})
    for rescale in (True, False):
        out = tmp_path / f"out_{rescale}"
        merge_rs.merge("dare", [model], out, pretrained=pre, drop_rate=0.3, scaling_factor=1.0, rescale=rescale)
        got = load(out)["w"]
        dropped = got == 0
        assert abs(dropped.mean() - 0.3) < 0.005
        scale = np.float32(1 / 0.7) if rescale else np.float32(1)
        np.testing.assert_allclose(got[~dropped], tau[~dropped] * scale, rtol=1e-6)


def test_dare_ties_applies_the_same_mask_before_ties(tmp_path):
    """DARE-TIES = TIES over the DARE-masked task vectors (binary-grid values keep every step exact)."""
    base_path, paths, base, models, keys = random_set(tmp_path, 4, "float32", 3, grid=True)
    b = ref.flatten(base, keys)
    masked = []
    for i in range(len(paths)):
        # Task i at its own position (same mask stream), the base elsewhere (τ = 0).
        only_i = [paths[j] if j == i else base_path for j in range(len(paths))]
        out = tmp_path / f"dare_{i}"
        merge_rs.merge("dare", only_i, out, pretrained=base_path, seed=1, drop_rate=0.5, scaling_factor=1.0)
        masked.append(ref.flatten(load(out), keys))
    assert all(np.mean(m == b) > 0.3 for m in masked), "about half of every task vector is dropped"
    want, _ = ref.ties(b, masked, 0.3, 20, "sum")
    report = merge_rs.merge("dare_ties", paths, tmp_path / "dt", pretrained=base_path, seed=1, drop_rate=0.5)
    assert report.method == "dare_ties" and report.parameters["drop_rate"] == 0.5
    np.testing.assert_allclose(ref.flatten(load(tmp_path / "dt"), keys), want, rtol=2e-6, atol=1e-7)


def test_per_tensor_coefficients_file(tmp_path):
    base_path, paths, base, models, keys = random_set(tmp_path, 6, "float32", 3)
    table = {k: [0.1 * (i + 1) + 0.05 * j for j in range(3)] for i, k in enumerate(keys)}
    file = tmp_path / "coefficients.json"
    file.write_text(json.dumps({"tasks": ["a", "b", "c"], "coefficients": table}))
    merge_rs.merge("task_arithmetic", paths, tmp_path / "out", pretrained=base_path, coefficients_file=file)
    got = load(tmp_path / "out")
    for k in keys:
        want = ref.coefficients(base[k].ravel(), [m[k].ravel() for m in models], table[k])
        np.testing.assert_allclose(got[k].ravel(), want, rtol=2e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_output_dtype_conversion_rounds_to_nearest_even(tmp_path, dtype):
    base_path, paths, base, models, keys = random_set(tmp_path, 9, "float32", 2)
    merge_rs.merge("task_arithmetic", paths, tmp_path / "out", pretrained=base_path, dtype=dtype)
    want = ref.task_arithmetic(ref.flatten(base, keys), [ref.flatten(m, keys) for m in models], 0.3)
    got = ref.flatten(load(tmp_path / "out"), keys)
    np.testing.assert_array_equal(got, quantize(want, dtype))
    info = merge_rs.inspect(tmp_path / "out")
    assert set(info.dtypes) == {{"float16": "F16", "bfloat16": "BF16", "float32": "F32"}[dtype]}


def test_sharded_output_and_integer_buffers(tmp_path):
    rng = np.random.default_rng(1)
    base = {"a": rng.normal(size=(64, 64)).astype(np.float32), "b": rng.normal(size=300).astype(np.float32),
            "position_ids": np.arange(50, dtype=np.int64)[None]}
    models = [{k: (v + 0.01 if v.dtype == np.float32 else v) for k, v in base.items()} for _ in range(2)]
    pre = save(tmp_path / "base", base)
    paths = [save(tmp_path / f"m{i}", m) for i, m in enumerate(models)]
    merge_rs.merge("task_arithmetic", paths, tmp_path / "out", pretrained=pre, max_shard_size="10KB")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) == 2
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == ["a", "b", "position_ids"]
    got = load(tmp_path / "out")
    np.testing.assert_array_equal(got["position_ids"], base["position_ids"])
    np.testing.assert_allclose(got["a"], base["a"] + np.float32(0.3) * np.float32(0.02), rtol=1e-5)


@pytest.mark.parametrize("dtype,threshold", [("float32", 20.0), ("bfloat16", 3.0), ("float32", 97.0)])
def test_ties_thresholds_are_exact_on_models_large_enough_to_sample(tmp_path, dtype, threshold):
    """Over 64 chunks: the engine predicts the threshold's bucket window from a sample and reads the exact
    value off pass 1; the thresholds must still equal the exact k-th values (np.partition)."""
    rng = np.random.default_rng(11)
    shapes = {"big.weight": (1536, 2048), "other.weight": (700, 1500), "scaled.bias": (5000,)}
    base = {k: rng.normal(0, 0.5, s).astype(np.float32) for k, s in shapes.items()}
    models = []
    for i in range(3):
        tau = {k: (rng.standard_t(3, s) * 0.01 * (1 + i + 10 * (k == "scaled.bias"))).astype(np.float32)
               for k, s in shapes.items()}
        models.append({k: quantize(base[k] + tau[k], dtype) for k in shapes})
    base = {k: quantize(v, dtype) for k, v in base.items()}
    base_path = save(tmp_path / "base", base, dtype)
    paths = [save(tmp_path / f"m{i}", m, dtype) for i, m in enumerate(models)]
    keys = sorted(shapes)
    b = ref.flatten(base, keys)
    want = [float(ref.kth_threshold(ref.flatten(m, keys) - b, threshold)) for m in models]
    report = merge_rs.merge("ties", paths, tmp_path / "out", pretrained=base_path, threshold=threshold, threads=2)
    assert report.ties_thresholds == want
    if dtype == "float32" and threshold == 20.0:  # per tensor: two large tensors by counters, a small one in memory
        sizes = np.cumsum([0] + [base[k].size for k in keys])
        groups = [slice(a, c) for a, c in zip(sizes[:-1], sizes[1:])]
        per_tensor, _ = ref.ties(b, [ref.flatten(m, keys) for m in models], 0.3, threshold, "sum", groups)
        merge_rs.merge("ties", paths, tmp_path / "per-tensor", pretrained=base_path, threshold=threshold,
                       trim="per-tensor", threads=2)
        np.testing.assert_allclose(ref.flatten(load(tmp_path / "per-tensor"), keys), per_tensor, rtol=2e-6, atol=1e-7)


def test_ties_thresholds_are_exact_when_the_sample_misleads(tmp_path):
    """The sample reads the first 2,048 elements of every 64 Ki chunk. There the task vectors are 100 times
    larger, so the predicted windows miss the k-th values: the selection counts the top bits, then the low
    bits, and the thresholds and the merge are still exact."""
    rng = np.random.default_rng(5)
    n = 64 * 65536
    base = {"w": rng.normal(0, 0.5, n).astype(np.float32)}
    sampled = (np.arange(n) % 65536) < 2048
    models = []
    for i in range(3):
        tau = rng.normal(0, 0.01 * (1 + i), n).astype(np.float32)
        models.append({"w": base["w"] + np.where(sampled, tau * 100, tau).astype(np.float32)})
    base_path = save(tmp_path / "base", base, "float32")
    paths = [save(tmp_path / f"m{i}", m, "float32") for i, m in enumerate(models)]
    taus = [m["w"] - base["w"] for m in models]
    want = [float(ref.kth_threshold(t, 20.0)) for t in taus]
    report = merge_rs.merge("ties", paths, tmp_path / "out", pretrained=base_path, threshold=20.0, threads=2)
    assert report.ties_thresholds == want
    merged, _ = ref.ties(base["w"], [m["w"] for m in models], 0.3, 20.0, "sum")
    np.testing.assert_allclose(load(tmp_path / "out")["w"], merged, rtol=2e-6, atol=1e-7)
