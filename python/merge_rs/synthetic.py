"""Synthetic CLIP-vision-shaped model sets: a pretrained checkpoint and fine-tuned ones with the exact tensor
names and shapes of a CLIP vision encoder, written by the Rust engine (deterministic from a seed). They load
with ``transformers.CLIPVisionModel`` and serve the demo, tests and benchmarks."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import _core
from .api import PathLike, parse_size


@dataclass(frozen=True)
class VisionShape:
    """The size of a CLIP vision tower."""

    hidden: int
    layers: int
    intermediate: int
    patch: int
    image: int
    heads: int
    channels: int = 3


PRESETS: dict[str, VisionShape] = {
    "tiny": VisionShape(hidden=64, layers=2, intermediate=256, patch=8, image=32, heads=4),
    "small": VisionShape(hidden=256, layers=4, intermediate=1024, patch=16, image=224, heads=4),
    "vit-b-32": VisionShape(hidden=768, layers=12, intermediate=3072, patch=32, image=224, heads=12),
    "vit-b-16": VisionShape(hidden=768, layers=12, intermediate=3072, patch=16, image=224, heads=12),
    "vit-l-14": VisionShape(hidden=1024, layers=24, intermediate=4096, patch=14, image=224, heads=16),
}


def clip_vision_tensors(shape: VisionShape, prefix: str = "vision_model.") -> list[tuple[str, list[int]]]:
    """Names and shapes of a transformers ``CLIPVisionModel``'s parameters."""
    h, i = shape.hidden, shape.intermediate
    positions = (shape.image // shape.patch) ** 2 + 1
    tensors: list[tuple[str, list[int]]] = [
        ("embeddings.class_embedding", [h]),
        ("embeddings.patch_embedding.weight", [h, shape.channels, shape.patch, shape.patch]),
        ("embeddings.position_embedding.weight", [positions, h]),
        ("pre_layrnorm.weight", [h]),
        ("pre_layrnorm.bias", [h]),
        ("post_layernorm.weight", [h]),
        ("post_layernorm.bias", [h]),
    ]
    for layer in range(shape.layers):
        p = f"encoder.layers.{layer}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            tensors += [(f"{p}self_attn.{proj}.weight", [h, h]), (f"{p}self_attn.{proj}.bias", [h])]
        tensors += [
            (f"{p}layer_norm1.weight", [h]),
            (f"{p}layer_norm1.bias", [h]),
            (f"{p}mlp.fc1.weight", [i, h]),
            (f"{p}mlp.fc1.bias", [i]),
            (f"{p}mlp.fc2.weight", [h, i]),
            (f"{p}mlp.fc2.bias", [h]),
            (f"{p}layer_norm2.weight", [h]),
            (f"{p}layer_norm2.bias", [h]),
        ]
    return sorted((prefix + name, dims) for name, dims in tensors)


def vision_config(shape: VisionShape) -> dict[str, object]:
    """A ``config.json`` for a CLIPVisionModel of this shape."""
    return {
        "architectures": ["CLIPVisionModel"],
        "model_type": "clip_vision_model",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "patch_size": shape.patch,
        "image_size": shape.image,
        "num_channels": shape.channels,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 512,
    }


def make_model_set(
    directory: PathLike,
    preset: str = "tiny",
    models: int = 4,
    *,
    dtype: str = "float32",
    seed: int = 0,
    max_shard_size: int | str = "5GB",
    weight_scale: float = 0.02,
    task_scale: float = 0.001,
    threads: int = 0,
) -> tuple[Path, list[Path]]:
    """Write ``directory/pretrained`` and ``directory/model_01..`` (CLIPVisionModel layout); returns
    ``(pretrained, [fine-tuned...])``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    shape = PRESETS[preset]
    config = json.dumps(vision_config(shape), indent=2)
    spec = {
        "tensors": clip_vision_tensors(shape),
        "models": models,
        "dtype": dtype,
        "seed": seed,
        "max_shard_size": parse_size(max_shard_size),
        "weight_scale": weight_scale,
        "task_scale": task_scale,
        "base_config": config,
        "model_config": config,
        "threads": threads,
    }
    paths = [Path(p) for p in _core.write_model_set(os.fspath(directory), json.dumps(spec))]
    return paths[0], paths[1:]
