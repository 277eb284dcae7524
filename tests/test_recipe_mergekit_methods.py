"""mergekit's methods outside the task-arithmetic family (nearswap, nuslerp, sce, karcher, ram, ramplus_tl,
arcee_fusion), each run by merge-rs and by ``mergekit-yaml`` on the same Llama stand-ins: the same tensors (≤ 1e-6
relative); and mergekit's registry against merge-rs's translators."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load
from test_recipe_mergekit import assert_same, llama, run_both, tied_llama  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # each case runs mergekit-yaml


def test_nearswap_gives_mergekits_tensors(llama, tmp_path):
    _, a, b, _ = llama
    config = {"merge_method": "nearswap", "base_model": str(a), "dtype": "float32",
              "parameters": {"t": [{"filter": "mlp", "value": [0.01, 0.1]}, {"value": 0.05}]},
              "models": [{"model": str(b)}]}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    moved = np.mean(ours["model.layers.0.mlp.up_proj.weight"] != load(a)["model.layers.0.mlp.up_proj.weight"])
    assert 0.05 < moved, "some elements moved toward the second model"


@pytest.mark.parametrize("with_base", [True, False])
def test_nuslerp_gives_mergekits_tensors(with_base, llama, tmp_path):
    base, a, b, _ = llama
    config = {"merge_method": "nuslerp", "dtype": "float32",
              "models": [{"model": str(a), "parameters": {"weight": [1.0, 0.2]}},
                         {"model": str(b), "parameters": {"weight": 0.6}}],
              **({"base_model": str(base)} if with_base else {})}
    assert_same(*run_both(tmp_path, config))


@pytest.mark.parametrize("select_topk", [1.0, 0.4])
def test_sce_gives_mergekits_tensors(select_topk, llama, tmp_path):
    base, a, b, c = llama
    config = {"merge_method": "sce", "base_model": str(base), "dtype": "float32",
              "parameters": {"select_topk": select_topk}, "models": [{"model": str(m)} for m in (a, b, c)]}
    assert_same(*run_both(tmp_path, config))


@pytest.mark.parametrize("with_base", [False, True])
def test_karcher_gives_mergekits_tensors(with_base, llama, tmp_path):
    base, a, b, c = llama
    config = {"merge_method": "karcher", "dtype": "float32", "parameters": {"max_iter": 20, "tol": 1e-6},
              "models": [{"model": str(m)} for m in (a, b, c)]}
    if with_base:
        config["base_model"] = str(base)
    assert_same(*run_both(tmp_path, config))


def test_ram_gives_mergekits_tensors(tied_llama, tmp_path):
    """On the coarse-grid models many task-vector entries are exactly 0, so every case occurs: no change, one
    model's change kept whole, several averaged."""
    base, a, b, c = tied_llama
    config = {"merge_method": "ram", "base_model": str(base), "dtype": "float32", "parameters": {"epsilon": 1e-5},
              "models": [{"model": str(m)} for m in (a, b, c)]}
    assert_same(*run_both(tmp_path, config))


def test_arcee_fusion_gives_mergekits_tensors(llama, tmp_path):
    """Below a million elements per tensor mergekit takes exact quartiles, as merge-rs always does."""
    base, a, _, _ = llama
    config = {"merge_method": "arcee_fusion", "base_model": str(base), "dtype": "float32",
              "models": [{"model": str(base)}, {"model": str(a)}]}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    before, after = load(base), load(a)
    taken = sum(int((ours[k] != before[k]).sum()) for k in ours)
    assert 0 < taken < sum(int((after[k] != before[k]).sum()) for k in ours), "only some changes are taken"


@pytest.mark.parametrize("parameters", [{}, {"r": 0.7, "alpha": 0.5, "epsilon": 1e-3}])
def test_ramplus_tl_gives_mergekits_tensors(parameters, tied_llama, tmp_path):
    """Per tensor, each model's lone changes are scaled by 1 + r · clamp(shared / lone, 0, alpha): the coarse grid
    gives every tensor lone, shared and unchanged entries."""
    base, a, b, c = tied_llama
    config = {"merge_method": "ramplus_tl", "base_model": str(base), "dtype": "float32", "parameters": parameters,
              "models": [{"model": str(m)} for m in (a, b, c)]}
    assert_same(*run_both(tmp_path, config))


def test_every_mergekit_method_runs_with_mergekits_parameter_names():
    """mergekit's registry, method by method: merge-rs translates each, and knows each of its parameters."""
    from mergekit.merge_methods import registry

    from merge_rs.recipes.mergekit_methods import ANY_METHODS_PARAMETER, TRANSLATORS

    names = {method.spec.name for method in registry.registered_methods()}
    assert names <= set(TRANSLATORS), f"not run: {sorted(names - set(TRANSLATORS))}"
    parameters = {p.name for method in registry.registered_methods() for p in method.spec.parameters}
    assert parameters <= ANY_METHODS_PARAMETER, f"unknown: {sorted(parameters - ANY_METHODS_PARAMETER)}"


def test_every_method_rounds_as_mergekit_does_in_half_precision():
    """With `dtype: bfloat16` or `float16`, each method either replays mergekit's roundings (its engine method
    declares `compute`) or is one whose float32 result rounded once is mergekit's (slerp, passthrough)."""
    from merge_rs.methods import get_method
    from merge_rs.recipes.mergekit_methods import TRANSLATORS

    for name, kind in TRANSLATORS.items():
        computes = any(p.name == "compute" for p in get_method(kind.method).parameters)
        assert computes != kind.rounds_once, name
