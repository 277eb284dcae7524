"""mergekit's own example configs (the six in ``examples/`` on its main branch, June 2026), as a user brings
them: every key and value as mergekit ships it, only the Hugging Face model names replaced by small local stand-ins
of the architectures they name. ``merge-rs run`` and ``mergekit-yaml`` both run each one; both write the same dtype,
tensor names and shapes, and every value within one unit in the last place of that dtype."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import written_dtypes
from test_recipe_mergekit import run_both

pytestmark = pytest.mark.slow  # each case runs mergekit-yaml

# The Llama-2-13B family of the examples: 40 layers, saved in float16 as those checkpoints are.
LLAMA_13B = ("TheBloke/Llama-2-13B-fp16", "psmathur/orca_mini_v3_13b", "garage-bAInd/Platypus2-13B",
             "WizardLM/WizardLM-13B-V1.2", "WizardLM/WizardMath-13B-V1.0")
# The Mistral-7B family: 32 layers with grouped-query attention, saved in bfloat16 as Mistral ships them.
MISTRAL_7B = ("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.2", "BioMistral/BioMistral-7B")

EXAMPLES: dict[str, dict[str, Any]] = {
    "arcee_fusion": {
        "models": [{"model": "model_a"}, {"model": "model_b"}],
        "merge_method": "arcee_fusion", "base_model": "model_a", "dtype": "bfloat16"},
    "bio-merge": {
        "models": [{"model": "mistralai/Mistral-7B-Instruct-v0.2", "parameters": {"density": 0.5, "weight": 0.5}},
                   {"model": "BioMistral/BioMistral-7B", "parameters": {"density": 0.5, "weight": 0.5}}],
        "merge_method": "ties", "base_model": "mistralai/Mistral-7B-v0.1",
        "parameters": {"normalize": False, "int8_mask": True}, "dtype": "float16"},
    "gradient-slerp": {
        "slices": [{"sources": [{"model": "psmathur/orca_mini_v3_13b", "layer_range": [0, 40]},
                                {"model": "garage-bAInd/Platypus2-13B", "layer_range": [0, 40]}]}],
        "merge_method": "slerp", "base_model": "psmathur/orca_mini_v3_13b",
        "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                             {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                             {"value": 0.5}]},
        "dtype": "float16"},
    "linear": {
        "models": [{"model": "psmathur/orca_mini_v3_13b", "parameters": {"weight": 1.0}},
                   {"model": "WizardLM/WizardLM-13B-V1.2", "parameters": {"weight": 0.3}},
                   {"model": "garage-bAInd/Platypus2-13B", "parameters": {"weight": 0.5}}],
        "merge_method": "linear", "dtype": "float16"},
    "orcamini-platy-44layer": {
        "slices": [{"sources": [{"model": "psmathur/orca_mini_v3_13b", "layer_range": [0, 24]}]},
                   {"sources": [{"model": "garage-bAInd/Platypus2-13B", "layer_range": [20, 40]}]}],
        "merge_method": "passthrough", "dtype": "float16"},
    "ties": {
        "models": [{"model": "psmathur/orca_mini_v3_13b", "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
                   {"model": "garage-bAInd/Platypus2-13B", "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}},
                   {"model": "WizardLM/WizardMath-13B-V1.0",
                    "parameters": {"density": 0.33, "weight": [{"filter": "mlp", "value": 0.5}, {"value": 0}]}}],
        "merge_method": "ties", "base_model": "TheBloke/Llama-2-13B-fp16",
        "parameters": {"normalize": True, "int8_mask": True}, "dtype": "float16"},
}


def _family(root: Path, config: Any, model_cls: Any, names: tuple[str, ...], dtype: Any) -> dict[str, Path]:
    """The first name is the base; the others are fine-tunes of it: its weights plus noise, each rounded to
    ``dtype`` on its own, as fine-tunes published in half precision are."""
    import torch

    torch.manual_seed(0)
    base = model_cls(config)
    paths = {}
    for i, name in enumerate(names):
        model = model_cls(config)
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for key, value in model.state_dict().items():
                noise = 0.02 * torch.randn(value.shape, generator=generator) if i else 0
                value.copy_(base.state_dict()[key] + noise)
        paths[name] = root / name.replace("/", "--")
        model.to(dtype).save_pretrained(paths[name])
    return paths


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    """Every model name the examples use, as a local directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    root = tmp_path_factory.mktemp("examples")
    shape = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 24, "num_attention_heads": 4}
    llama = LlamaConfig(num_hidden_layers=40, num_key_value_heads=4, **shape)
    mistral = MistralConfig(num_hidden_layers=32, num_key_value_heads=2, sliding_window=4096, **shape)
    paths = _family(root, llama, LlamaForCausalLM, LLAMA_13B, torch.float16)
    paths |= _family(root, mistral, MistralForCausalLM, MISTRAL_7B, torch.bfloat16)
    paths["model_a"], paths["model_b"] = paths[LLAMA_13B[1]], paths[LLAMA_13B[2]]
    return paths


def _localised(value: Any, paths: dict[str, Path]) -> Any:
    """The config with every model name replaced by its stand-in's path; nothing else changes."""
    if isinstance(value, dict):
        return {k: str(paths[v]) if k in ("model", "base_model") else _localised(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_localised(v, paths) for v in value]
    return value


def _ordered_bits(values: np.ndarray, dtype: str) -> np.ndarray:
    """Each value's bit pattern in ``dtype`` as an integer that counts representable values in order, so the
    difference of two is their distance in units in the last place."""
    if dtype == "float16":
        bits, magnitude = values.astype(np.float16).view(np.int16).astype(np.int64), 0x7FFF
    else:  # float32, or bfloat16: the top half of the float32 pattern (the values are bfloat16 already)
        bits, magnitude = values.astype(np.float32).view(np.int32).astype(np.int64), 0x7FFFFFFF
        if dtype == "bfloat16":
            bits, magnitude = bits >> 16, 0x7FFF
    return np.where(bits < 0, -(bits & magnitude), bits)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_mergekits_examples_run_as_written_and_give_mergekits_values(example, stand_ins, tmp_path):
    """The written dtype is mergekit's too: the config's, but float32 for arcee_fusion (its mask is float32)."""
    ours, theirs = run_both(tmp_path, _localised(EXAMPLES[example], stand_ins))
    written = written_dtypes(tmp_path / "theirs")
    assert written_dtypes(tmp_path / "ours") == written
    assert written == {"float32" if example == "arcee_fusion" else EXAMPLES[example]["dtype"]}
    (dtype,) = written
    assert sorted(ours) == sorted(theirs)
    for key, want in theirs.items():
        assert ours[key].shape == want.shape, key
        steps = np.abs(_ordered_bits(ours[key], dtype) - _ordered_bits(want, dtype))
        assert steps.max() <= 1, f"{key}: {int(np.count_nonzero(steps > 1))} values more than one step away"
