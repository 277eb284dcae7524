"""mergekit's ``modules`` (the single-module form, ``default``) and how parameters fall from a nearer scope to a
farther one (source, slice, module, config): merge-rs and ``mergekit-yaml`` give the same tensors."""

from __future__ import annotations

import pytest

from test_recipe_mergekit import assert_same, llama, run_both  # noqa: F401 (llama is a fixture)

pytestmark = pytest.mark.slow  # each case runs mergekit-yaml

ATTENTION_ONLY = [{"filter": "self_attn", "value": 0.9}]  # matches no MLP tensor: those take the next scope's value


def test_a_default_module_of_models_gives_mergekits_tensors(llama, tmp_path):  # noqa: F811
    base, a, b, c = llama
    config = {"merge_method": "ties", "base_model": str(base), "dtype": "float32",
              "parameters": {"density": 0.4, "lambda": 0.7},
              "modules": {"default": {"parameters": {"density": ATTENTION_ONLY, "normalize": False},
                                      "models": [{"model": str(m), "parameters": {"weight": w}}
                                                 for m, w in ((a, 0.6), (b, 0.3), (c, [0.2, 0.8]))]}}}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)


def test_a_default_module_of_slices_gives_mergekits_tensors(llama, tmp_path):  # noqa: F811
    base, a, b, _ = llama
    sources = lambda span: [{"model": str(m), "layer_range": span, "parameters": {"weight": w}}  # noqa: E731
                            for m, w in ((base, 1.0), (a, 0.7), (b, 0.4))]
    config = {"merge_method": "ties", "base_model": str(base), "dtype": "float32", "parameters": {"density": 0.5},
              "modules": {"default": {"parameters": {"density": 0.8},
                                      "slices": [{"sources": sources([0, 2])},
                                                 {"sources": sources([1, 4]), "parameters": {"density": ATTENTION_ONLY}}]}}}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    assert "model.layers.4.mlp.up_proj.weight" in ours


def test_a_slices_conditions_that_match_nothing_fall_back_to_the_configs_value(llama, tmp_path):  # noqa: F811
    base, a, b, _ = llama
    config = {"merge_method": "task_arithmetic", "base_model": str(base), "dtype": "float32",
              "parameters": {"lambda": 0.5},
              "slices": [{"sources": [{"model": str(m), "layer_range": [0, 4], "parameters": {"weight": 1.0}}
                                      for m in (base, a, b)],
                          "parameters": {"lambda": [{"filter": "mlp", "value": 1.5}]}}]}
    assert_same(*run_both(tmp_path, config))
