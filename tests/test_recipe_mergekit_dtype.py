"""mergekit configs with ``dtype: bfloat16`` or ``float16``: mergekit computes in that dtype, rounding every step,
and merge-rs replays those roundings for ``linear``, the task-arithmetic family, ``model_stock``, ``nearswap``,
``sce``, ``nuslerp``, ``multislerp``, ``ram``, ``ramplus_tl`` and ``arcee_fusion``, so the bits are mergekit's
(``mergekit-yaml`` itself is run), and for ``karcher`` but for the odd value. mergekit computes ``slerp`` in
float32, as merge-rs does, and ``passthrough`` in one step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import cli, written_dtypes
from test_recipe_mergekit import bfloat16_llamas, llama, run_both  # noqa: F401 - llama is a fixture

pytestmark = pytest.mark.slow  # each case runs mergekit-yaml


@pytest.fixture(scope="module")
def half_llama(tmp_path_factory) -> list[Path]:
    """bfloat16 Llama stand-ins: fine-tuned copies are the base plus noise, each saved in bfloat16."""
    import torch

    return bfloat16_llamas(tmp_path_factory.mktemp("half"), lambda shape, generator: (
        0.05 * torch.randn(shape, generator=generator)).to(torch.bfloat16))


@pytest.fixture(scope="module")
def far_llama(tmp_path_factory) -> list[Path]:
    """bfloat16 Llama stand-ins far apart (noise as large as the weights), so that the angles between them
    survive rounding and Karcher's gradient steps run."""
    import torch

    return bfloat16_llamas(tmp_path_factory.mktemp("far"), lambda shape, generator: (
        torch.randn(shape, generator=generator)).to(torch.bfloat16))


@pytest.fixture(scope="module")
def sparse_half_llama(tmp_path_factory) -> list[Path]:
    """bfloat16 Llama stand-ins whose copies each change about 40 % of the base's values: some values one model
    changes alone, some several."""
    import torch

    return bfloat16_llamas(tmp_path_factory.mktemp("sparse"), lambda shape, generator: (
        0.05 * torch.randn(shape, generator=generator) * (torch.rand(shape, generator=generator) < 0.4)
    ).to(torch.bfloat16))


def _config(method: str, paths: list[Path], dtype: str) -> dict[str, Any]:
    base, a, b, c = (str(p) for p in paths)
    weights = [0.3, 0.5, 0.7]
    per_model = {
        "linear": [{"weight": w} for w in (0.1, 0.3, 0.7)],
        "task_arithmetic": [{"weight": w} for w in weights],
        "ties": [{"weight": w, "density": d} for w, d in zip(weights, (0.3, 0.5, 0.45))],
        "breadcrumbs_ties": [{"weight": w, "density": 0.6, "gamma": 0.05} for w in weights],
        "della_linear": [{"weight": w} for w in weights],
        "breadcrumbs": [{"weight": w} for w in weights],
    }[method]
    shared = {"task_arithmetic": {"lambda": 0.8}, "breadcrumbs_ties": {"normalize": True},
              "della_linear": {"density": 1.0, "epsilon": 0.0},
              "breadcrumbs": {"density": 0.6, "gamma": 0.05, "rescale": True}}.get(method, {})  # the L1 rescale
    config = {"merge_method": method, "dtype": dtype, "parameters": shared,
              "models": [{"model": m, "parameters": p} for m, p in zip((a, b, c), per_model)]}
    if method != "linear":
        config["base_model"] = base
    return config


def assert_same_bits(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert sorted(ours) == sorted(theirs)
    for key, want in theirs.items():
        got = ours[key]
        differ = int(np.count_nonzero(got != want))
        assert differ == 0, f"{key}: {differ} of {want.size} values differ (largest {np.abs(got - want).max():.3g})"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("method", ["linear", "task_arithmetic", "ties", "breadcrumbs", "breadcrumbs_ties",
                                    "della_linear"])
def test_half_precision_configs_give_mergekits_bits(method, dtype, half_llama, tmp_path):
    assert_same_bits(*run_both(tmp_path, _config(method, half_llama, dtype)))


@pytest.mark.parametrize("filter_wise", [False, True])
def test_half_precision_model_stock_gives_mergekits_bits(filter_wise, half_llama, tmp_path):
    base, *models = (str(p) for p in half_llama)
    config = {"merge_method": "model_stock", "base_model": base, "dtype": "bfloat16",
              "parameters": {"filter_wise": filter_wise}, "models": [{"model": m} for m in models]}
    assert_same_bits(*run_both(tmp_path, config))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_nearswap_gives_mergekits_bits(dtype, half_llama, tmp_path):
    a, b = (str(p) for p in half_llama[1:3])
    config = {"merge_method": "nearswap", "base_model": a, "dtype": dtype, "parameters": {"t": 0.01},
              "models": [{"model": a}, {"model": b}]}
    assert_same_bits(*run_both(tmp_path, config))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("select_topk", [1.0, 0.5])
def test_half_precision_sce_gives_mergekits_bits(dtype, select_topk, half_llama, tmp_path):
    base, *models = (str(p) for p in half_llama)
    config = {"merge_method": "sce", "base_model": base, "dtype": dtype, "parameters": {"select_topk": select_topk},
              "models": [{"model": m} for m in models]}
    assert_same_bits(*run_both(tmp_path, config))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("with_base", [False, True])
def test_half_precision_nuslerp_gives_mergekits_bits(dtype, with_base, half_llama, tmp_path):
    base, a, b, _ = (str(p) for p in half_llama)
    config = {"merge_method": "nuslerp", "dtype": dtype, "models": [{"model": a, "parameters": {"weight": 0.3}},
                                                                    {"model": b, "parameters": {"weight": 0.7}}]}
    if with_base:
        config["base_model"] = base
    assert_same_bits(*run_both(tmp_path, config))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("with_base", [False, True])
def test_half_precision_multislerp_gives_mergekits_bits(dtype, with_base, half_llama, tmp_path):
    base, *models = (str(p) for p in half_llama)
    config = {"merge_method": "multislerp", "dtype": dtype,
              "models": [{"model": m, "parameters": {"weight": w}} for m, w in zip(models, (0.3, 0.5, 0.2))]}
    if with_base:
        config["base_model"] = base
    assert_same_bits(*run_both(tmp_path, config))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("far", [False, True])
def test_half_precision_karcher_gives_mergekits_bits(dtype, far, half_llama, far_llama, tmp_path):
    """mergekit's bits but for the odd value: both tools take the norms in float32, summed in another order, and
    a norm a float32 step apart can move a rounding (most often one half-precision step; with models far apart,
    where Karcher's gradient steps run, a few)."""
    models = [str(p) for p in (far_llama if far else half_llama)[1:]]
    config = {"merge_method": "karcher", "dtype": dtype, "models": [{"model": m} for m in models]}
    ours, theirs = run_both(tmp_path, config)
    total = differ = 0
    for key, want in theirs.items():
        got = ours[key]
        error = np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)
        assert error <= 1e-3, f"{key}: relative error {error:.2e}"
        total, differ = total + want.size, differ + int(np.count_nonzero(got != want))
    assert differ <= total // 1000, f"{differ} of {total} values differ"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("method, parameters", [("ram", {}), ("ram", {"epsilon": 0.02}), ("ramplus_tl", {}),
                                                ("ramplus_tl", {"r": 0.5, "alpha": 0.9, "epsilon": 0.02})])
def test_half_precision_ram_gives_mergekits_bits(dtype, method, parameters, sparse_half_llama, tmp_path):
    base, *models = (str(p) for p in sparse_half_llama)
    config = {"merge_method": method, "base_model": base, "dtype": dtype, "parameters": parameters,
              "models": [{"model": m} for m in models]}
    assert_same_bits(*run_both(tmp_path, config))
    written = {tool: written_dtypes(tmp_path / tool) for tool in ("ours", "theirs")}
    assert written["ours"] == written["theirs"] == {"float32" if method == "ramplus_tl" else dtype}, written


def test_float32_inputs_are_rounded_to_the_configs_dtype_first(llama, tmp_path):  # noqa: F811
    assert_same_bits(*run_both(tmp_path, _config("ties", llama, "bfloat16")))


def test_the_replayed_dtype_shows_in_the_plan(half_llama, tmp_path):
    base, a, b = half_llama[:3]
    for name, text in {"fusion": f"merge_method: arcee_fusion\nbase_model: {base}\nmodels: [{{model: {a}}}]\n",
                       "linear": f"merge_method: linear\nmodels: [{{model: {a}, parameters: {{weight: 1}}}}, "
                                 f"{{model: {b}, parameters: {{weight: 2}}}}]\n"}.items():
        path = tmp_path / f"{name}.yml"
        path.write_text(f"dtype: bfloat16\n{text}")
        shown = cli("run", path, "--out", tmp_path / "out", "--dry-run").stdout
        assert "warning" not in shown and 'compute="bfloat16"' in shown, shown


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_passthrough_gives_mergekits_bits(dtype, half_llama, tmp_path):
    """One multiplication, rounded once by both tools."""
    config = {"merge_method": "passthrough", "dtype": dtype,
              "models": [{"model": str(half_llama[1]), "parameters": {"scale": 0.7}}]}
    assert_same_bits(*run_both(tmp_path, config))


def test_slerp_in_half_precision_is_computed_in_float32_by_both_tools(half_llama, tmp_path):
    """mergekit's slerp works in float32 whatever the dtype and rounds once, as merge-rs does: no warning, and the
    bits agree but for the odd element one or two half-precision steps away (the norms are summed in another
    order)."""
    import torch

    a, b = (str(p) for p in half_llama[1:3])
    config = {"merge_method": "slerp", "base_model": a, "dtype": "bfloat16", "parameters": {"t": 0.3},
              "models": [{"model": a}, {"model": b}]}
    path = tmp_path / "slerp.yml"
    path.write_text(yaml.safe_dump(config))
    assert "warning" not in cli("run", path, "--out", tmp_path / "dry", "--dry-run").stdout
    ours, theirs = run_both(tmp_path, config)
    total = differ = 0
    for key, want in theirs.items():
        got = ours[key]
        scale = np.abs(want).max()
        assert np.abs(got - want).max() <= scale * 2.0 ** -8, f"{key}: more than a half-precision step of its scale"
        total, differ = total + want.size, differ + int(np.count_nonzero(got != want))
    assert differ <= total // 100, f"{differ} of {total} values differ"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_arcee_fusion_gives_mergekits_bits(dtype, half_llama, tmp_path):
    """Below a million elements per tensor mergekit's quartiles are exact, so every step can be replayed: the
    softmaxes, the divergence, the importances and the threshold in the dtype, the result in float32."""
    base, a = (str(p) for p in half_llama[:2])
    config = {"merge_method": "arcee_fusion", "base_model": base, "dtype": dtype, "models": [{"model": a}]}
    assert_same_bits(*run_both(tmp_path, config))
    assert written_dtypes(tmp_path / "ours") == written_dtypes(tmp_path / "theirs") == {"float32"}
