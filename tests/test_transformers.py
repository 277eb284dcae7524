"""Merged outputs load with transformers as they are, and transformers-5 (unprefixed) checkpoints merge
with the hub's layouts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same, load

import merge_rs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def loaded_state(path) -> dict[str, np.ndarray]:
    model, info = transformers.CLIPVisionModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_merged_directory_loads_with_clip_vision_model(golden, tmp_path, dtype):
    out = tmp_path / "merged"
    merge_rs.merge("ties", golden["models"], out, pretrained=golden["pretrained"], dtype=dtype)
    state = loaded_state(out)
    merged = load(out)
    for name, value in merged.items():
        bare = name.removeprefix("vision_model.")
        key = name if name in state else bare
        np.testing.assert_array_equal(state[key], value, err_msg=name)
    if dtype:
        model = transformers.CLIPVisionModel.from_pretrained(out, dtype="auto")
        assert model.dtype == torch.bfloat16


def test_sharded_output_loads(golden, tmp_path):
    out = tmp_path / "sharded"
    report = merge_rs.merge("task_arithmetic", golden["models"], out, pretrained=golden["pretrained"],
                            max_shard_size="30KB")
    assert len(report.output_files) > 1
    assert loaded_state(out)


def test_transformers5_layout_merges_with_the_hub_layouts(golden, tmp_path):
    """Fine-tuned models saved by transformers 5 (no `vision_model.` prefix) merge against the full CLIPModel
    pretrained checkpoint; the result is written in their layout and equals the prefixed merge."""
    bare_models = []
    for i, src in enumerate(golden["models"]):
        loaded = transformers.CLIPVisionModel.from_pretrained(src)
        # A model built from its config saves in transformers 5's own (unprefixed) layout; a loaded one would
        # be written back in the layout it came from.
        fresh = transformers.CLIPVisionModel(loaded.config)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp_path / f"v5_{i}")
        bare_models.append(tmp_path / f"v5_{i}")
    assert merge_rs.inspect(bare_models[0]).layout == "clip_vision_unprefixed"
    merge_rs.merge("ties", bare_models, tmp_path / "bare", pretrained=golden["pretrained"])
    merge_rs.merge("ties", golden["models"], tmp_path / "prefixed", pretrained=golden["pretrained"])
    bare = load(tmp_path / "bare")
    assert all(not k.startswith("vision_model.") for k in bare)
    prefixed = {k.removeprefix("vision_model."): v for k, v in load(tmp_path / "prefixed").items()}
    assert_same(bare, prefixed, rtol=0, atol=0)
    loaded_state(tmp_path / "bare")
    # Mixed layouts among the fine-tuned models are matched too; the first model's layout is written.
    mixed = [golden["models"][0], *bare_models[1:]]
    merge_rs.merge("ties", mixed, tmp_path / "mixed", pretrained=golden["pretrained"])
    assert_same(load(tmp_path / "mixed"), load(tmp_path / "prefixed"), rtol=0, atol=0)


def test_synthetic_model_sets_load(tmp_path):
    from merge_rs.synthetic import make_model_set

    pretrained, models = make_model_set(tmp_path / "set", "tiny", 2, dtype="bfloat16")
    for path in (pretrained, *models):
        assert loaded_state(path)
