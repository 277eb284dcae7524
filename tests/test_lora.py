"""PEFT LoRA adapters as inputs: an adapter merges exactly as the dense model θ₀ + s·B·A it stands for, with
every method, alone or mixed with full fine-tunes; PEFT's own merge_and_unload agrees; bad adapters are one-line
errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, load, save, two_linear_layers

import merge_rs
from merge_rs.methods import METHODS

SHAPES = {
    "enc.layers.0.attn.q_proj.weight": (6, 8), "enc.layers.0.attn.q_proj.bias": (6,),
    "enc.layers.0.fc1.weight": (10, 6), "enc.layers.1.attn.q_proj.weight": (6, 8),
    "embed.weight": (12, 8), "head.weight": (3, 6),
}
TARGETS = ["enc.layers.0.attn.q_proj", "enc.layers.0.fc1", "enc.layers.1.attn.q_proj"]


def base_model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    tensors = {k: rng.normal(0, 0.5, s).astype(np.float32) for k, s in SHAPES.items()}
    return save(tmp_path / "base", tensors), tensors


def delta(p: np.ndarray, q: np.ndarray, scale: float) -> np.ndarray:
    """s·P·Q summed in float32 over the rank in order, as the engine forms it (so the dense twin is exact)."""
    d = np.zeros((p.shape[0], q.shape[1]), np.float32)
    for k in range(p.shape[1]):
        d += p[:, k:k + 1] * q[k]
    return d * np.float32(scale)


def adapter(path: Path, base: dict[str, np.ndarray], seed: int, rank: int = 2, alpha: float = 4.0,
            config: dict | None = None) -> tuple[Path, dict[str, np.ndarray]]:
    """A PEFT adapter directory on TARGETS, and the dense model it stands for."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    factors, dense = {}, dict(base)
    for module in TARGETS:
        rows, cols = base[f"{module}.weight"].shape
        a = rng.normal(0, 0.3, (rank, cols)).astype(np.float32)
        b = rng.normal(0, 0.3, (rows, rank)).astype(np.float32)
        factors[f"base_model.model.{module}.lora_A.weight"] = a
        factors[f"base_model.model.{module}.lora_B.weight"] = b
        dense[f"{module}.weight"] = base[f"{module}.weight"] + delta(b, a, alpha / rank)
    save_file(factors, str(path / "adapter_model.safetensors"))
    settings = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["q_proj", "fc1"],
                **(config or {})}
    (path / "adapter_config.json").write_text(json.dumps(settings))
    return path, dense


def parameters(method: str, n: int, fisher: list[Path]) -> dict:
    """Values for the method's required parameters (the rest keep their defaults)."""
    given = {}
    for p in METHODS[method].parameters:
        if not p.required:
            continue
        if p.kind == "path_list":
            given[p.name] = [str(f) for f in fisher]
        elif p.kind in ("float_list", "float_or_list"):
            given[p.name] = [0.6, 0.4][:n]
        else:
            given[p.name] = 0.5
    return given


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_merges_an_adapter_as_its_dense_model(tmp_path, method):
    base_path, base = base_model(tmp_path)
    first, dense_first = adapter(tmp_path / "lora1", base, seed=1)
    second, dense_second = adapter(tmp_path / "lora2", base, seed=2)
    rng = np.random.default_rng(3)
    full = {k: v + rng.normal(0, 0.05, v.shape).astype(np.float32) for k, v in base.items()}
    full_path = save(tmp_path / "full", full)
    dense = [save(tmp_path / "dense1", dense_first), save(tmp_path / "dense2", dense_second)]
    fisher = [save(tmp_path / f"fisher{i}", {k: np.abs(v) + 0.1 for k, v in base.items()}) for i in range(2)]
    values = parameters(method, 2, fisher)
    # An adapter beside a full fine-tune, then two adapters (whose untargeted tensors all have τ = 0); a method of one
    # model takes the adapter alone.
    cases = [("mixed", [first, full_path], [dense[0], full_path]), ("adapters", [first, second], dense)]
    if METHODS[method].max_models == 1:
        cases = [("alone", [first], [dense[0]])]
    for case, adapters, twins in cases:
        got = merge_rs.merge(method, adapters, tmp_path / f"{case}-a", pretrained=base_path, **values)
        want = merge_rs.merge(method, twins, tmp_path / f"{case}-d", pretrained=base_path, **values)
        assert got.merged_tensors == want.merged_tensors == len(SHAPES)
        merged, expected = load(tmp_path / f"{case}-a"), load(tmp_path / f"{case}-d")
        for name in SHAPES:
            np.testing.assert_array_equal(merged[name], expected[name], err_msg=f"{method}, {case}: {name}")


def test_adapters_and_full_models_mix_and_rslora_alpha_patterns_apply(tmp_path):
    base_path, base = base_model(tmp_path)
    one, dense_one = adapter(tmp_path / "lora1", base, seed=1, rank=3, alpha=6.0,
                             config={"use_rslora": True, "alpha_pattern": {"fc1": 2.0}})
    two, dense_two = adapter(tmp_path / "lora2", base, seed=2)
    # rsLoRA scales by α/√r, and fc1's α is 2: rebuild those entries of the dense twin accordingly.
    factors = load(one / "adapter_model.safetensors")
    for module in TARGETS:
        alpha = 2.0 if module.endswith("fc1") else 6.0
        b, a = factors[f"base_model.model.{module}.lora_B.weight"], factors[f"base_model.model.{module}.lora_A.weight"]
        dense_one[f"{module}.weight"] = base[f"{module}.weight"] + delta(b, a, alpha / np.sqrt(3))
    dense_paths = [save(tmp_path / "d1", dense_one), save(tmp_path / "d2", dense_two)]
    for method, values in [("task_arithmetic", {"scaling_factor": 0.4}), ("ties", {"threshold": 30})]:
        merge_rs.merge(method, [one, two], tmp_path / f"{method}-a", pretrained=base_path, **values)
        merge_rs.merge(method, dense_paths, tmp_path / f"{method}-d", pretrained=base_path, **values)
        got, want = load(tmp_path / f"{method}-a"), load(tmp_path / f"{method}-d")
        for name in SHAPES:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{method}: {name}")


def test_peft_merge_and_unload_gives_the_same_model(tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from safetensors.torch import save_file
    from transformers.pytorch_utils import Conv1D

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(12, 8)
            self.q_proj = torch.nn.Linear(8, 6)
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.c_attn = Conv1D(5, 8)
            self.head = torch.nn.Linear(6, 3)

    torch.manual_seed(0)
    cases = {
        "linear-embedding-conv": dict(target_modules=["embed", "q_proj", "conv"], modules_to_save=["head"]),
        "rslora-patterns": dict(target_modules=["q_proj", "conv"], use_rslora=True, rank_pattern={"conv": 2},
                                alpha_pattern={"q_proj": 3}),
        "fan-in-fan-out": dict(target_modules=["c_attn"], fan_in_fan_out=True),
    }
    for name, options in cases.items():
        model = Tiny()
        base = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(base, str(tmp_path / f"{name}-base.safetensors"))
        config = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **options)
        wrapped = peft.get_peft_model(model, config)
        with torch.no_grad():
            for module in wrapped.modules():  # a trained head, so that modules_to_save matters
                if "modules_to_save" in options and isinstance(module, torch.nn.Linear) and module.out_features == 3:
                    module.weight.add_(1.0)
        wrapped.save_pretrained(tmp_path / name)
        want = {k: v.detach().float().numpy() for k, v in wrapped.merge_and_unload().state_dict().items()}
        merge_rs.merge("task_arithmetic", [tmp_path / name], tmp_path / f"{name}-out",
                       pretrained=tmp_path / f"{name}-base.safetensors", scaling_factor=1.0)
        got = load(tmp_path / f"{name}-out")
        assert sorted(got) == sorted(want), name
        for key in want:
            scale = max(float(np.abs(want[key]).max()), 1e-12)
            assert float(np.abs(got[key] - want[key]).max()) <= 1e-6 * scale, f"{name}: {key}"


def test_the_cli_merges_adapters_and_refuses_what_it_cannot_read(tmp_path):
    base_path, base = base_model(tmp_path)
    one, _ = adapter(tmp_path / "lora1", base, seed=1)
    two, _ = adapter(tmp_path / "lora2", base, seed=2)
    ok = cli("merge", "ties", "--model", one, "--model", two, "--pretrained", base_path, "--out", tmp_path / "out",
             "--quiet")
    assert "2 models" in ok.stdout
    for method, args, needle in [
        ("simple_average", ["--model", one, "--model", two, "--out", tmp_path / "refused"],
         "is a LoRA adapter: give the model it adapts"),
        ("task_arithmetic", ["--model", one, "--model", two, "--pretrained", base_path, "--out", one], "lora1"),
    ]:
        result = cli("merge", method, *args, check=False)
        assert result.returncode != 0 and needle in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    dora, _ = adapter(tmp_path / "dora", base, seed=3, config={"use_dora": True})
    result = cli("merge", "task_arithmetic", "--model", dora, "--model", two, "--pretrained", base_path, "--out",
                 tmp_path / "dora-out", check=False)
    assert result.returncode != 0 and "DoRA" in result.stderr and "Traceback" not in result.stderr
    similarity = merge_rs.cosine_similarity(base_path, [one, two, tmp_path / "out"])
    assert similarity.matrix[0][0] == pytest.approx(1.0)


def test_recipes_take_adapters_and_model_plus_lora_and_their_cards_reproduce_them(tmp_path):
    base_path, base = base_model(tmp_path)
    one, _ = adapter(tmp_path / "lora1", base, seed=1)
    rng = np.random.default_rng(4)
    tuned = save(tmp_path / "tuned", {k: v + rng.normal(0, 0.05, v.shape).astype(np.float32) for k, v in base.items()})
    over_tuned, _ = adapter(tmp_path / "lora2", base, seed=2)
    recipe = tmp_path / "r.yml"
    recipe.write_text(f"method: ties\npretrained: {base_path}\nparameters: {{threshold: 40}}\n"
                      f"models:\n  - {one}\n  - {{model: {tuned}, lora: {over_tuned}}}\n")
    plan = cli("run", recipe, "--out", tmp_path / "r", "--dry-run").stdout
    assert "model 2:" in plan and f"{len(SHAPES)} tensors" in plan, plan
    cli("run", recipe, "--out", tmp_path / "r", "--quiet")
    merge_rs.merge("ties", [one, (tuned, over_tuned)], tmp_path / "api", pretrained=base_path, threshold=40)
    cli("run", tmp_path / "r" / "README.md", "--out", tmp_path / "again", "--quiet")
    first, second, third = load(tmp_path / "r"), load(tmp_path / "api"), load(tmp_path / "again")
    for name in SHAPES:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        np.testing.assert_array_equal(first[name], third[name], err_msg=name)
    assert not np.array_equal(first["enc.layers.0.fc1.weight"], load(tmp_path / "tuned")["enc.layers.0.fc1.weight"])
    card = (tmp_path / "api" / "README.md").read_text()
    assert f"lora: {over_tuned}" in card, card
    info = merge_rs.inspect(one)
    assert info.layout == "peft-lora" and info.tensor_count == 2 * len(TARGETS)


def test_an_extracted_adapter_loads_in_peft_and_keeps_the_best_rank_r_change(tmp_path):
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from safetensors.torch import save_file

    Tiny = two_linear_layers(torch)
    torch.manual_seed(0)
    base = {k: v.detach().clone() for k, v in Tiny().state_dict().items()}
    tuned = {k: v + 0.1 * torch.randn_like(v) for k, v in base.items()}
    save_file(base, str(tmp_path / "base.safetensors"))
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    for rank in (6, 2):
        out = tmp_path / f"rank{rank}"
        report = merge_rs.extract_lora(tmp_path / "tuned.safetensors", out, pretrained=tmp_path / "base.safetensors",
                                       rank=rank)
        assert [m.module for m in report.modules] == ["fc", "q_proj"]
        assert sorted(t["tensor"] for t in report.left_out) == ["fc.bias", "q_proj.bias"]
        fresh = Tiny()
        fresh.load_state_dict(base)
        merged = peft.PeftModel.from_pretrained(fresh, out).merge_and_unload()
        for module in report.modules:
            name = f"{module.module}.weight"
            got = merged.state_dict()[name].numpy() - base[name].numpy()
            tau = (tuned[name] - base[name]).double().numpy()
            s = np.linalg.svd(tau, compute_uv=False)
            error = np.linalg.norm(got - tau)
            assert error == pytest.approx(np.sqrt((s[rank:] ** 2).sum()), abs=1e-5), name
            assert module.relative_error == pytest.approx(error / np.linalg.norm(tau), abs=1e-5)


def test_extract_lora_on_the_command_line(tmp_path):
    base_path, base = base_model(tmp_path)
    rng = np.random.default_rng(5)
    tuned = save(tmp_path / "tuned", {k: v + rng.normal(0, 0.05, v.shape).astype(np.float32) for k, v in base.items()})
    done = cli("extract-lora", tuned, "--pretrained", base_path, "--rank", "3", "--rank-energy", "0.5", "--out",
               tmp_path / "lora", "--quiet")
    assert "modules, rank" in done.stdout and "left out:" in done.stderr, done
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == config["r"] <= 3
    assert (tmp_path / "lora" / "README.md").read_text().count("merge-rs extract-lora") == 1
    for args, needle in [
        (["--rank", "7", "--out", tmp_path / "big"], "rank 7 is larger than"),
        (["--rank", "2", "--out", tuned], "tuned"),
        (["--rank", "2", "--out", tmp_path / "lora"], "lora"),
    ]:
        result = cli("extract-lora", tuned, "--pretrained", base_path, *args, check=False)
        assert result.returncode != 0 and needle in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    same = cli("extract-lora", base_path, "--pretrained", base_path, "--rank", "2", "--out", tmp_path / "none",
               check=False)
    assert "nothing to extract" in same.stderr and not (tmp_path / "none").exists()
