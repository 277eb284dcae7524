"""Benchmark workloads: CLIP vision encoders with the exact tensor names and shapes transformers gives, a
pretrained checkpoint plus fine-tuned ones whose task vectors are small relative to the weights, generated
once by merge-rs itself and cached under benches/.data/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from merge_rs.synthetic import PRESETS, VisionShape, clip_vision_tensors, make_model_set

DATA = Path(__file__).parent / ".data"


@dataclass(frozen=True)
class Workload:
    """A generated model set."""

    preset: str
    models: int
    dtype: str = "float32"
    shard_size: str = "5GB"

    @property
    def name(self) -> str:
        sharded = "-sharded" if self.shard_size != "5GB" else ""
        return f"{self.preset}-{self.dtype}{sharded}-{self.models}"

    @property
    def directory(self) -> Path:
        return DATA / self.name

    def paths(self, count: int | None = None) -> tuple[Path, list[Path]]:
        """The pretrained model and the first ``count`` fine-tuned ones, generated if needed."""
        done = self.directory / ".complete"
        if not done.exists():
            check_shapes_against_transformers(PRESETS[self.preset])
            make_model_set(self.directory, self.preset, self.models, dtype=self.dtype, max_shard_size=self.shard_size)
            done.touch()
        models = [self.directory / f"model_{i:02d}" for i in range(1, self.models + 1)]
        return self.directory / "pretrained", models[: count or self.models]

    def files(self, count: int | None = None) -> list[Path]:
        pretrained, models = self.paths(count)
        return sorted(f for d in (pretrained, *models) for f in d.glob("*.safetensors"))


def check_shapes_against_transformers(shape: VisionShape) -> None:
    """The synthetic layout must be exactly what transformers' CLIPVisionModel holds."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, patch_size=shape.patch, image_size=shape.image,
    )
    with torch.device("meta"):
        model = CLIPVisionModel(config)
    theirs = sorted((f"vision_model.{k.removeprefix('vision_model.')}", list(v.shape))
                    for k, v in model.state_dict().items())
    ours = clip_vision_tensors(shape)
    if theirs != ours:
        raise RuntimeError(f"synthetic CLIP layout differs from transformers': {set(map(str, theirs)) ^ set(map(str, ours))}")
