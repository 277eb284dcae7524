"""PEFT's add_weighted_adapter combinations reproduced by merge-rs: `svd`, `dare_linear_svd`, `ties_svd` and
`magnitude_prune_svd` through `--out-format peft` (ΔW per module to 10⁻⁵), `cat` through `--out-format peft-cat`
(to 10⁻⁶)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli, load, save, two_linear_layers


def delta_weights(wrapped, name: str) -> dict[str, np.ndarray]:
    """Each adapted module's ΔW under PEFT's adapter ``name``."""
    return {module_name: module.get_delta_weight(name).detach().numpy()
            for module_name, module in wrapped.base_model.model.named_modules() if hasattr(module, "lora_A")}


def assert_adapter_deltas(adapter_dir, want: dict[str, np.ndarray], rtol: float = 1e-5) -> None:
    """The written adapter's B·A equals ``want`` per module, to ``rtol`` of its norm."""
    factors = load(adapter_dir / "adapter_model.safetensors")
    for name, delta in want.items():
        got = factors[f"base_model.model.{name}.lora_B.weight"] @ factors[f"base_model.model.{name}.lora_A.weight"]
        assert np.linalg.norm(got - delta) <= rtol * np.linalg.norm(delta), name


def peft_adapters(tmp_path, torch, peft):
    """Two adapters of ranks 4 and 3 (α 8 and 6) on a tiny model, saved under ``adapters/a`` and ``adapters/b``
    beside ``base.safetensors``; the PEFT model holding both."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = two_linear_layers(torch)()
    save_file({k: v.detach().clone() for k, v in model.state_dict().items()}, str(tmp_path / "base.safetensors"))
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "fc"], init_lora_weights=False)
    wrapped = peft.get_peft_model(model, config, adapter_name="a")
    wrapped.add_adapter("b", peft.LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "fc"],
                                             init_lora_weights=False))
    wrapped.save_pretrained(tmp_path / "adapters")  # each adapter in its own directory
    return wrapped


def merge_adapters(tmp_path, out: str, *method: str) -> None:
    cli("merge", *method, "--pretrained", tmp_path / "base.safetensors", "--model", tmp_path / "adapters" / "a",
        "--model", tmp_path / "adapters" / "b", "--out-format", "peft", "--rank", "3", "--out", tmp_path / out,
        "--quiet")


# PEFT's combination (weights 0.6, 0.4 unless given) → the merge-rs method that writes it.
SVD_COMBINATIONS = {
    # Σ wᵢ·ΔWᵢ truncated to rank r, per module.
    "svd": ["task_arithmetic", "--coefficients", "0.6,0.4"],
    # At density 1 (PEFT's masks are random below it) with equal weights: DARE dropping nothing, scaled by w.
    "dare_linear_svd@0.5": ["dare", "--drop-rate", "0", "--scaling-factor", "0.5"],
    # Each ΔWᵢ cut to its int(density·n) largest magnitudes, weighted, summed: mergekit's magnitude sparsifier.
    "magnitude_prune_svd": ["generalized_task_arithmetic", "--weights", "0.6,0.4", "--sparsification", "magnitude",
                            "--density", "0.5"],
    # Cut as above, signs elected on the unweighted sum, the agreeing entries weighted and averaged over how many
    # agree: weigh=after with normalize.
    "ties_svd": ["generalized_task_arithmetic", "--weights", "0.6,0.4", "--sparsification", "magnitude",
                 "--consensus", "sum", "--density", "0.5", "--normalize", "--weigh", "after"],
    # With equal weights w, mergekit's own order gives the same: weights 1, λ = w.
    "ties_svd@0.7": ["generalized_task_arithmetic", "--weights", "1,1", "--sparsification", "magnitude",
                     "--consensus", "sum", "--density", "0.5", "--normalize", "--lambda", "0.7"],
}


@pytest.mark.parametrize("combination", sorted(SVD_COMBINATIONS))
def test_a_merge_written_as_an_adapter_matches_peft_svd_combinations(tmp_path, combination):
    """PEFT's add_weighted_adapter(..., combination_type=C, svd_rank=3): the combined ΔW truncated to rank 3 per
    module. merge-rs: the method that combines the same way, then --out-format peft --rank 3."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    wrapped = peft_adapters(tmp_path, torch, peft)
    kind, _, weight = combination.partition("@")
    weights = [float(weight)] * 2 if weight else [0.6, 0.4]
    extra = {} if kind == "svd" else {"density": 1.0 if kind.startswith("dare") else 0.5}
    wrapped.add_weighted_adapter(["a", "b"], weights, "merged", combination_type=kind, svd_rank=3, **extra)
    merge_adapters(tmp_path, "merged", *SVD_COMBINATIONS[combination])
    assert json.loads((tmp_path / "merged" / "adapter_config.json").read_text())["lora_alpha"] == 3
    assert_adapter_deltas(tmp_path / "merged", delta_weights(wrapped, "merged"))
    assert not any(p.name.startswith(".merged") for p in tmp_path.iterdir()), "the full merge was removed"


def test_peft_output_and_weigh_after_refuse_what_they_cannot_do(tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    peft_adapters(tmp_path, torch, peft)
    refused = cli("merge", "task_arithmetic", "--pretrained", tmp_path / "base.safetensors", "--model",
                  tmp_path / "adapters" / "a", "--out-format", "peft", "--out", tmp_path / "x", check=False)
    assert refused.returncode != 0 and "--rank" in refused.stderr
    several = cli("merge", "task_arithmetic", "--pretrained", tmp_path / "base.safetensors", "--model",
                  tmp_path / "adapters", "--out", tmp_path / "y", check=False)
    assert "holds PEFT adapters in its subdirectories (a, b)" in several.stderr, several.stderr
    no_consensus = cli("merge", "generalized_task_arithmetic", "--weights", "1,1", "--weigh", "after",
                       "--pretrained", tmp_path / "base.safetensors", "--model", tmp_path / "adapters" / "a",
                       "--model", tmp_path / "adapters" / "b", "--out", tmp_path / "z", check=False)
    assert "weigh=after needs a sign consensus" in no_consensus.stderr, no_consensus.stderr
    assert len(no_consensus.stderr.strip().splitlines()) == 1 and not (tmp_path / "z").exists()


def test_adapters_stacked_match_peft_cat_combination(tmp_path):
    """PEFT's add_weighted_adapter(..., "cat"): [B₁ B₂]·[w₁s₁A₁; w₂s₂A₂], exact, at rank r₁ + r₂ per module. The
    second adapter has its own rank and α for one module and rsLoRA's scale."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from safetensors.torch import save_file

    Tiny = two_linear_layers(torch)
    torch.manual_seed(1)
    model = Tiny()
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_file(base, str(tmp_path / "base.safetensors"))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "fc"],
                                                         init_lora_weights=False), adapter_name="a")
    wrapped.add_adapter("b", peft.LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "fc"], use_rslora=True,
                                             rank_pattern={"fc": 2}, alpha_pattern={"fc": 5}, init_lora_weights=False))
    wrapped.save_pretrained(tmp_path / "adapters")
    wrapped.add_weighted_adapter(["a", "b"], [0.6, 0.4], "cat", combination_type="cat")
    want = {name: module.get_delta_weight("cat").detach().numpy()
            for name, module in wrapped.base_model.model.named_modules() if hasattr(module, "lora_A")}
    done = cli("merge", "task_arithmetic", "--pretrained", tmp_path / "base.safetensors", "--model",
               tmp_path / "adapters" / "a", "--model", tmp_path / "adapters" / "b", "--coefficients", "0.6,0.4",
               "--out-format", "peft-cat", "--out", tmp_path / "cat")
    assert "2 adapters stacked → 2 modules of rank 6–7" in done.stdout, done.stdout
    fresh = Tiny()
    fresh.load_state_dict(base)
    loaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "cat")
    for name, module in loaded.base_model.model.named_modules():
        if hasattr(module, "lora_A"):
            got = module.get_delta_weight("default").detach().numpy()
            assert np.linalg.norm(got - want[name]) <= 1e-6 * np.linalg.norm(want[name]), name
    from safetensors.torch import load_file

    half = tmp_path / "half"  # adapter a saved in bfloat16
    half.mkdir()
    (half / "adapter_config.json").write_text((tmp_path / "adapters" / "a" / "adapter_config.json").read_text())
    factors = load_file(str(tmp_path / "adapters" / "a" / "adapter_model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in factors.items()}, str(half / "adapter_model.safetensors"))
    cli("merge", "task_arithmetic", "--pretrained", tmp_path / "base.safetensors", "--model", half, "--model",
        tmp_path / "adapters" / "b", "--coefficients", "0.6,0.4", "--out-format", "peft-cat", "--out",
        tmp_path / "cat16", "--quiet")
    stacked = load(tmp_path / "cat16" / "adapter_model.safetensors")
    for name, delta in want.items():
        got = stacked[f"base_model.model.{name}.lora_B.weight"] @ stacked[f"base_model.model.{name}.lora_A.weight"]
        assert np.linalg.norm(got - delta) <= 2e-2 * np.linalg.norm(delta), name
    for args, needle in [
        (["ties"], "writes task arithmetic"),
        (["task_arithmetic", "--coefficients", "1,2,3"], "3 coefficients for 2 adapters"),
    ]:
        refused = cli("merge", *args, "--pretrained", tmp_path / "base.safetensors", "--model",
                      tmp_path / "adapters" / "a", "--model", tmp_path / "adapters" / "b", "--out-format", "peft-cat",
                      "--out", tmp_path / "x", check=False)
        assert refused.returncode != 0 and needle in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    config = json.loads((tmp_path / "adapters" / "a" / "adapter_config.json").read_text())
    for change, needle in [({"modules_to_save": ["fc"]}, "modules_to_save is set"),
                           ({"alpha_pattern": {"(": 2}}, "alpha_pattern key '(' is not a pattern")]:
        bad = tmp_path / f"bad-{len(needle)}"
        bad.mkdir()
        (bad / "adapter_model.safetensors").write_bytes((half / "adapter_model.safetensors").read_bytes())
        (bad / "adapter_config.json").write_text(json.dumps({**config, **change}))
        refused = cli("merge", "task_arithmetic", "--pretrained", tmp_path / "base.safetensors", "--model", bad,
                      "--out-format", "peft-cat", "--out", tmp_path / "z", check=False)
        assert needle in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    other = save(tmp_path / "other", {"q_proj.weight": np.zeros((6, 8), np.float32)})
    refused = cli("merge", "task_arithmetic", "--pretrained", other, "--model", tmp_path / "adapters" / "a",
                  "--out-format", "peft-cat", "--out", tmp_path / "y", check=False)
    assert "module 'fc' changes 'fc.weight', which the base model" in refused.stderr, refused.stderr
