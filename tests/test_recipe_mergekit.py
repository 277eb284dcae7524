"""mergekit configs run as they are: merge-rs and mergekit itself (``mergekit-yaml`` on transformers models,
``mergekit-pytorch`` on raw files, both installed by the test extra) give the same tensors (≤ 1e-6 relative)
for every supported method whose result is deterministic, with per-model values, layer gradients and
filters. The DARE family draws random masks whose seeds cannot match mergekit's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml

from conftest import cli, load

pytestmark = pytest.mark.slow  # each case runs mergekit-yaml

BIN = Path(sys.executable).parent
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _perturbed(model_cls: Any, config: Any, root: Path, names: list[str]) -> list[Path]:
    """A pretrained model and fine-tuned copies (the pretrained weights plus noise), saved as HF directories."""
    import torch

    torch.manual_seed(0)
    base = model_cls(config)
    base.save_pretrained(root / names[0])
    paths = [root / names[0]]
    for i, name in enumerate(names[1:]):
        torch.manual_seed(i + 1)
        model = model_cls(config)
        with torch.no_grad():
            for key, value in model.state_dict().items():
                if value.is_floating_point():
                    value.copy_(base.state_dict()[key] + 0.05 * torch.randn_like(value))
        model.save_pretrained(root / name)
        paths.append(root / name)
    return paths


def llama_config() -> Any:
    """A tiny Llama: 4 layers of width 32, GQA (4 query heads, 2 key/value heads), a 64-token vocabulary."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> list[Path]:
    from transformers import LlamaForCausalLM

    return _perturbed(LlamaForCausalLM, llama_config(), tmp_path_factory.mktemp("llama"), ["base", "a", "b", "c"])


@pytest.fixture(scope="module")
def clip_vision(tmp_path_factory) -> list[Path]:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                              image_size=16, patch_size=8)
    return _perturbed(CLIPVisionModel, config, tmp_path_factory.mktemp("clip"), ["base", "a", "b"])


def run_both(tmp: Path, config: dict[str, Any], tool: str = "mergekit-yaml") -> tuple[dict, dict]:
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(config))
    cli("run", path, "--out", tmp / "ours", "--quiet")
    args = [str(BIN / tool), str(path), str(tmp / "theirs")]
    if tool == "mergekit-yaml":
        args += ["--no-copy-tokenizer", "--lora-merge-cache", str(tmp / "lora-cache")]
    done = subprocess.run(args, capture_output=True, text=True, env=OFFLINE)
    assert done.returncode == 0, done.stderr[-2000:]
    return load(tmp / "ours"), load(tmp / "theirs")


def assert_same(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert sorted(ours) == sorted(theirs)
    for key, want in theirs.items():
        error = np.linalg.norm(ours[key] - want) / max(np.linalg.norm(want), 1e-30)
        assert error <= 1e-6, f"{key}: relative error {error:.2e}"


GRADIENT = [0.2, 1.0]
MLP_DENSITY = [{"filter": "mlp", "value": 0.3}, {"value": 0.8}]
CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    # merge_method: (global parameters, per-model parameters for a, b, c)
    "linear": ({"weight": 0.25}, [{"weight": GRADIENT}, {"weight": 0.5}, {"weight": [{"filter": "self_attn", "value": 2.0},
                                                                        {"value": 0.1}]}]),
    "task_arithmetic": ({"lambda": 0.8}, [{"weight": 0.3}, {"weight": [0.5, 0.1, 0.9]}, {"weight": 0.7}]),
    "ties": ({"lambda": 0.9}, [{"weight": 0.7, "density": 0.5}, {"weight": GRADIENT, "density": MLP_DENSITY},
                               {"weight": 1.0, "density": 0.2}]),
    "breadcrumbs": ({"density": 0.6, "gamma": 0.05, "rescale": True}, [{"weight": 1.0}, {"weight": 0.5},
                                                                         {"weight": GRADIENT}]),
    "breadcrumbs_ties": ({"normalize": True}, [{"weight": 1.0, "density": 0.5, "gamma": 0.1},
                                              {"weight": 0.5, "density": MLP_DENSITY, "gamma": 0.05},
                                              {"weight": 0.8, "density": 0.7, "gamma": 0.0}]),
    "della_linear": ({"density": 1.0, "epsilon": 0.1, "lambda": 1.5, "normalize": True},
                     [{"weight": 1.0}, {"weight": GRADIENT}, {"weight": 0.3}]),
    "della": ({"density": 1.0, "rescale": False}, [{"weight": 0.4}, {"weight": 1.0}, {"weight": GRADIENT}]),
    "model_stock": ({"filter_wise": True}, [{}, {}, {}]),
    "multislerp": ({}, [{"weight": 1.0}, {"weight": 0.5}, {"weight": 2.0}]),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_mergekit_yaml_configs_give_mergekits_tensors_on_llama(method, llama, tmp_path):
    base, *models = llama
    shared, per_model = CASES[method]
    config = {"merge_method": method, "base_model": str(base), "dtype": "float32", "parameters": shared,
              "models": [{"model": str(m), "parameters": p} for m, p in zip(models, per_model)]}
    assert_same(*run_both(tmp_path, config))


def test_slerp_with_a_layer_gradient_matches_mergekit(llama, tmp_path):
    base, a, *_ = llama
    config = {"merge_method": "slerp", "base_model": str(base), "dtype": "float32",
              "parameters": {"t": [{"filter": "self_attn", "value": [0.0, 0.5, 0.3, 0.7, 1.0]}, {"value": 0.5}]},
              "models": [{"model": str(base)}, {"model": str(a)}]}
    assert_same(*run_both(tmp_path, config))


def test_clip_vision_ties_with_gradients_matches_mergekit(clip_vision, tmp_path):
    base, a, b = clip_vision
    config = {"merge_method": "ties", "base_model": str(base), "dtype": "float32",
              "models": [{"model": str(a), "parameters": {"weight": GRADIENT, "density": 0.5}},
                         {"model": str(b), "parameters": {"weight": 0.5, "density": MLP_DENSITY}}]}
    assert_same(*run_both(tmp_path, config))


def test_mergekit_pytorch_raw_configs_take_a_gradients_first_value(clip_vision, tmp_path):
    base, a, b = (p / "model.safetensors" for p in clip_vision)
    config = {"merge_method": "ties", "base_model": str(base), "parameters": {"density": 0.4, "weight": 1.0},
              "models": [{"model": str(a), "parameters": {"weight": [0.3, 1.0]}}, {"model": str(b)}]}
    assert_same(*run_both(tmp_path, config, tool="mergekit-pytorch"))


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_keeps_about_the_density_and_is_reproducible_from_its_seed(method, llama, tmp_path):
    base, a, b, _ = llama
    path = tmp_path / "dare.yml"
    path.write_text(yaml.safe_dump({
        "merge_method": method, "base_model": str(base), "parameters": {"density": 0.3, "weight": 1.0,
                                                                         "rescale": False},
        "models": [{"model": str(a)}]}))
    cli("run", path, "--out", tmp_path / "one", "--quiet")
    cli("run", path, "--out", tmp_path / "two", "--quiet")
    one, two, theta0, theta = load(tmp_path / "one"), load(tmp_path / "two"), load(base), load(a)
    kept = sum(int(np.count_nonzero(one[k] != theta0[k])) for k in one) / sum(v.size for v in one.values())
    assert abs(kept - 0.3) < 0.03, kept
    assert all(np.array_equal(one[k], two[k]) for k in one)
    changed = np.flatnonzero(one["lm_head.weight"] != theta0["lm_head.weight"])
    np.testing.assert_allclose(one["lm_head.weight"].ravel()[changed], theta["lm_head.weight"].ravel()[changed],
                               rtol=1e-6)


@pytest.mark.parametrize("shared", [{"weight": 0.5}, {}])
def test_linear_with_the_base_also_listed_weights_it_by_its_own_entry(shared, llama, tmp_path):
    """mergekit weights base_model by its own entry under models when it has one, not by the global weight."""
    base, a, *_ = llama
    config = {"merge_method": "linear", "base_model": str(base), "dtype": "float32", "parameters": shared,
              "models": [{"model": str(base), "parameters": {"weight": 0.9}},
                         {"model": str(a), "parameters": {"weight": 0.1}}]}
    assert_same(*run_both(tmp_path, config))


def test_a_missing_weight_is_named_at_its_own_entry(llama, tmp_path):
    base, a, b, _ = llama
    config = {"merge_method": "linear", "base_model": str(base), "dtype": "float32",
              "models": [{"model": str(base), "parameters": {"weight": 0.9}}, {"model": str(a)},
                         {"model": str(b), "parameters": {"weight": 0.1}}]}
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    error = cli("run", tmp_path / "config.yml", "--out", tmp_path / "o", "--dry-run", check=False).stderr
    assert "models.1.parameters.weight" in error and "needs 'weight'" in error, error


@pytest.mark.parametrize("method", ["slerp", "model_stock"])
def test_a_weight_the_method_does_not_use_is_ignored_with_a_warning(method, llama, tmp_path):
    """As in mergekit's own tests: slerp and model_stock configs may give models a weight, which mergekit ignores."""
    base, a, b, _ = llama
    others = [a] if method == "slerp" else [a, b]
    config = {"merge_method": method, "base_model": str(base), "dtype": "float32",
              "parameters": {"t": 0.3} if method == "slerp" else {},
              "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in others]}
    assert_same(*run_both(tmp_path, config))
    (tmp_path / "typo.yml").write_text(yaml.safe_dump({**config, "parameters": {**config["parameters"], "wieght": 1}}))
    refused = cli("run", tmp_path / "typo.yml", "--out", tmp_path / "o", "--dry-run", check=False).stderr
    assert "has no parameter 'wieght'" in refused, refused
    done = cli("run", tmp_path / "config.yml", "--out", tmp_path / "o2", "--dry-run")
    plan = done.stdout + done.stderr
    assert f"models.0.parameters.weight: mergekit's {method} does not use 'weight'" in plan, plan


def _lora(model_path: Path, out: Path, seed: int) -> Path:
    """A PEFT LoRA adapter (random A and B) for the Llama at ``model_path``."""
    import peft
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(model_path)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                             init_lora_weights=False)
    peft.get_peft_model(model, config).save_pretrained(out)
    return out


def test_model_plus_lora_gives_mergekits_tensors(llama, tmp_path):
    """mergekit's model+lora: an adapter read over a fine-tune and another over the base, as mergekit-yaml merges
    them after PEFT's merge_and_unload."""
    base, a, *_ = llama
    over_a, over_base = _lora(a, tmp_path / "lora-a", 1), _lora(base, tmp_path / "lora-base", 2)
    config = {"merge_method": "task_arithmetic", "base_model": str(base), "dtype": "float32",
              "models": [{"model": f"{a}+{over_a}", "parameters": {"weight": 0.6}},
                         {"model": f"{base}+{over_base}", "parameters": {"weight": 0.9}}]}
    assert_same(*run_both(tmp_path, config))


def test_a_lora_over_the_base_model_gives_mergekits_tensors(llama, tmp_path):
    """base_model: model+lora: θ₀ is the base with the adapter applied, and fine-tunes (one read with its own
    adapter, one another adapter over the bare base) are merged over it, as mergekit-yaml merges them."""
    base, a, b, _ = llama
    over_base, over_a = _lora(base, tmp_path / "lora-base", 2), _lora(a, tmp_path / "lora-a", 1)
    other = _lora(base, tmp_path / "lora-other", 3)
    config = {"merge_method": "ties", "base_model": f"{base}+{over_base}", "dtype": "float32",
              "parameters": {"density": 0.5},
              "models": [{"model": f"{a}+{over_a}", "parameters": {"weight": 0.6}},
                         {"model": str(b), "parameters": {"weight": 0.9}},
                         {"model": f"{base}+{other}", "parameters": {"weight": 0.3}}]}
    assert_same(*run_both(tmp_path, config))


def test_a_passthrough_frankenmerge_gives_mergekits_tensors_and_config(llama, tmp_path):
    """slices: layers 0–2 of one model then 1–3 of another (six layers), a per-source scale with a filter and a
    slice-level gradient, as mergekit-yaml stacks them."""
    base, a, b, _ = llama
    config = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 3],
                      "parameters": {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]}}]},
        {"sources": [{"model": str(b), "layer_range": [1, 4]}], "parameters": {"scale": [1.0, 0.25]}},
    ]}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    assert "model.layers.5.mlp.up_proj.weight" in ours and "model.layers.6.mlp.up_proj.weight" not in ours
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["num_hidden_layers"] == 6
    cli("run", tmp_path / "ours" / "README.md", "--out", tmp_path / "again", "--quiet")  # the card reproduces it
    again = load(tmp_path / "again")
    assert all(np.array_equal(again[k], ours[k]) for k in ours)
    (tmp_path / "two.yml").write_text(yaml.safe_dump({**config, "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}, {"model": str(b), "layer_range": [0, 2]}]}]}))
    refused = cli("run", tmp_path / "two.yml", "--out", tmp_path / "o", "--dry-run", check=False).stderr
    assert "mergekit's passthrough takes exactly one model" in refused, refused
    (tmp_path / "far.yml").write_text(yaml.safe_dump({**config, "slices": [
        {"sources": [{"model": str(a), "layer_range": [2, 5]}]}]}))
    refused = cli("run", tmp_path / "far.yml", "--out", tmp_path / "o", "--dry-run", check=False).stderr
    assert "has 4 layers, so layer_range [2, 5] reaches past them" in refused, refused


def test_a_slices_residual_weight_is_ignored_as_mergekit_ignores_it(llama, tmp_path):
    _, a, b, _ = llama
    config = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(b), "layer_range": [2, 4]}], "residual_weight": 0.3}]}
    assert_same(*run_both(tmp_path, config))
    shown = cli("run", tmp_path / "config.yml", "--out", tmp_path / "dry", "--dry-run").stdout
    assert "slices.1.residual_weight is ignored: mergekit 0.1.5 reads it but never uses it" in shown, shown


def test_passthrough_of_one_model_scales_it_as_mergekit_does(llama, tmp_path):
    _, a, *_ = llama
    config = {"merge_method": "passthrough", "dtype": "float32",
              "models": [{"model": str(a), "parameters": {"scale": [{"filter": "mlp", "value": 0.5}, {"value": 2}]}}]}
    assert_same(*run_both(tmp_path, config))


def test_slices_merging_several_models_give_mergekits_tensors(llama, tmp_path):
    """mergekit's gradient-slerp example, shrunk: slerp of two models over slices, t a gradient per filter; and TIES
    over two slices with per-source weights that differ by slice."""
    base, a, b, _ = llama
    slerp = {"merge_method": "slerp", "base_model": str(a), "dtype": "float32",
             "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 1]}, {"filter": "mlp", "value": [1, 0]},
                                  {"value": 0.5}]},
             "slices": [{"sources": [{"model": str(a), "layer_range": [0, 4]}, {"model": str(b), "layer_range": [0, 4]}]}]}
    (tmp_path / "slerp").mkdir()
    (tmp_path / "ties").mkdir()
    assert_same(*run_both(tmp_path / "slerp", slerp))
    ties = {"merge_method": "ties", "base_model": str(base), "dtype": "float32", "parameters": {"density": 0.5},
            "slices": [{"sources": [{"model": str(base), "layer_range": [0, 2]},
                                    {"model": str(a), "layer_range": [0, 2], "parameters": {"weight": 0.7}},
                                    {"model": str(b), "layer_range": [0, 2], "parameters": {"weight": 0.3}}]},
                       {"sources": [{"model": str(base), "layer_range": [1, 4]},
                                    {"model": str(a), "layer_range": [1, 4], "parameters": {"weight": 0.2}},
                                    {"model": str(b), "layer_range": [1, 4], "parameters": {"weight": [0.1, 0.9]}}],
                        "parameters": {"density": 0.8}}]}
    ours, theirs = run_both(tmp_path / "ties", ties)
    assert_same(ours, theirs)
    assert "model.layers.4.self_attn.q_proj.weight" in ours


def test_a_slices_own_base_model_gives_mergekits_tensors(llama, tmp_path):
    """A slice's base_model replaces the config's for its layers: task arithmetic over θ₀ in the first slice and
    over model a (θ₀ then being one of the merged models) in the second, as mergekit plans it."""
    base, a, b, _ = llama
    sources = lambda span, weights: [{"model": str(m), "layer_range": span, "parameters": {"weight": w}}  # noqa: E731
                                     for m, w in zip((base, a, b), weights)]
    config = {"merge_method": "task_arithmetic", "base_model": str(base), "dtype": "float32",
              "slices": [{"sources": sources([0, 2], [1.0, 0.6, 0.4])},
                         {"sources": sources([2, 4], [0.5, 1.0, 0.8]), "base_model": str(a)}]}
    ours, theirs = run_both(tmp_path, config)
    assert_same(ours, theirs)
    name = "model.layers.3.mlp.up_proj.weight"
    w0, wa, wb = (load(m)[name] for m in (base, a, b))
    assert np.allclose(ours[name], wa + 0.5 * (w0 - wa) + 0.8 * (wb - wa), rtol=0, atol=1e-6), "a is this slice's θ₀"


def test_slices_that_list_other_models_give_mergekits_tensors(llama, tmp_path):
    """Each slice merges its own models (as many in each): b in the first slice's layers, c in the second's."""
    base, a, b, c = llama
    config = {"merge_method": "ties", "base_model": str(base), "dtype": "float32", "parameters": {"density": 0.6},
              "slices": [{"sources": [{"model": str(m), "layer_range": [0, 2], "parameters": {"weight": w}}
                                      for m, w in ((base, 1.0), (a, 0.7), (b, 0.3))]},
                         {"sources": [{"model": str(m), "layer_range": [2, 4], "parameters": {"weight": w}}
                                      for m, w in ((c, 0.9), (base, 1.0), (a, 0.4))]}]}
    assert_same(*run_both(tmp_path, config))
    (tmp_path / "uneven").mkdir()
    config["slices"][1]["sources"].pop()
    path = tmp_path / "uneven" / "config.yml"
    path.write_text(yaml.safe_dump(config))
    failed = cli("run", path, "--out", tmp_path / "uneven" / "out", check=False)
    assert failed.returncode != 0 and "slices.1.sources: merge-rs needs as many sources in every slice" in failed.stderr


def bfloat16_llamas(root: Path, change: Callable[[Any, Any], Any], grid: bool = False) -> list[Path]:
    """A bfloat16 base (rounded to a 1/64 grid with ``grid``) and copies a, b, c whose tensors are the base's plus
    ``change(shape, generator)``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(llama_config()).to(torch.bfloat16)
    if grid:
        with torch.no_grad():
            for value in base.state_dict().values():
                value.copy_(torch.round(value.float() * 64) / 64)
    base.save_pretrained(root / "base")
    paths = [root / "base"]
    for i, name in enumerate(["a", "b", "c"]):
        generator = torch.Generator().manual_seed(i + 1)
        model = LlamaForCausalLM(llama_config()).to(torch.bfloat16)
        with torch.no_grad():
            for key, value in model.state_dict().items():
                value.copy_(base.state_dict()[key] + change(value.shape, generator))
        model.save_pretrained(root / name)
        paths.append(root / name)
    return paths


@pytest.fixture(scope="module")
def tied_llama(tmp_path_factory) -> list[Path]:
    """bfloat16 models on a coarse grid: every task vector takes a few magnitudes only, so thousands of entries
    tie at each top-k cut-off, as in real half-precision checkpoints."""
    import torch

    return bfloat16_llamas(tmp_path_factory.mktemp("tied"), lambda shape, generator: torch.randint(
        -3, 4, shape, generator=generator).to(torch.bfloat16) / 64, grid=True)


TIE_CASES = {
    "ties": ({"lambda": 1.0}, [{"weight": 0.7, "density": 0.3}, {"weight": 0.5, "density": MLP_DENSITY},
                               {"weight": 1.0, "density": 0.45}]),
    "breadcrumbs": ({"density": 0.5, "gamma": 0.1}, [{"weight": 1.0}, {"weight": 0.5}, {"weight": 0.8}]),
    "breadcrumbs_ties": ({}, [{"weight": 1.0, "density": 0.4, "gamma": 0.2}, {"weight": 0.5, "density": 0.6,
                                                                              "gamma": 0.05},
                              {"weight": 0.8, "density": 0.7, "gamma": 0.1}]),
    "sce": ({"select_topk": 0.3}, [{}, {}, {}]),
}


@pytest.mark.parametrize("method", sorted(TIE_CASES))
def test_cut_off_ties_keep_what_mergekit_keeps(method, tied_llama, tmp_path):
    """Where many magnitudes (SCE: variances) tie at the cut-off, the entries kept are those torch's CPU sort
    (`topk`) puts first. Another pick moves an entry by at least 1/64 times a weight; float32 arithmetic in
    another order moves it by a few units in the last place."""
    base, *models = tied_llama
    shared, per_model = TIE_CASES[method]
    config = {"merge_method": method, "base_model": str(base), "dtype": "float32", "parameters": shared,
              "models": [{"model": str(m), "parameters": p} for m, p in zip(models, per_model)]}
    ours, theirs = run_both(tmp_path, config)
    assert sorted(ours) == sorted(theirs)
    for key, want in theirs.items():
        np.testing.assert_allclose(ours[key], want, rtol=0, atol=1e-6, err_msg=key)
