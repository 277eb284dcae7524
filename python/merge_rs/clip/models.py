"""Loading CLIP checkpoints with transformers: the full model (for its text tower, projections and processor) and
vision encoders (fine-tuned or merged ``CLIPVisionModel`` directories, or the vision tower of a ``CLIPModel``)."""

from __future__ import annotations

import json
from pathlib import Path


# Evaluation and the learned methods compute in float32 whatever the checkpoint's dtype (the zoo ships float16).
_COMPUTE = "float32"


def quiet_library_progress() -> None:
    """merge-rs shows its own progress: silence the per-file bars of transformers and datasets."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def model_type(path: Path) -> str:
    config = Path(path) / "config.json"
    if not config.exists():
        raise FileNotFoundError(f"{path}: no config.json (expected a transformers CLIP checkpoint directory)")
    return json.loads(config.read_text()).get("model_type", "")


def load_clip(path: Path):
    """(CLIPModel, CLIPProcessor) from a full CLIP checkpoint directory, in eval mode."""
    from transformers import CLIPModel, CLIPProcessor

    quiet_library_progress()
    kind = model_type(path)
    if kind != "clip":
        raise ValueError(f"{path}: a full CLIP model (model_type 'clip', with its text tower) is needed for "
                         f"zero-shot heads; this one is '{kind}'")
    return CLIPModel.from_pretrained(path, dtype=_COMPUTE).eval(), CLIPProcessor.from_pretrained(path)


def load_vision_encoder(path: Path):
    """A ``CLIPVisionModel`` from a vision-only checkpoint, or the vision tower of a full CLIP checkpoint."""
    from transformers import CLIPModel, CLIPVisionModel

    quiet_library_progress()
    kind = model_type(path)
    if kind == "clip_vision_model":
        return CLIPVisionModel.from_pretrained(path, dtype=_COMPUTE).eval()
    if kind == "clip":
        clip = CLIPModel.from_pretrained(path, dtype=_COMPUTE)
        vision = CLIPVisionModel(clip.config.vision_config)
        vision.load_state_dict(_vision_state(clip, vision))
        return vision.eval()
    raise ValueError(f"{path}: not a CLIP checkpoint (model_type '{kind}')")


def _vision_state(clip, vision) -> dict:
    """The CLIPModel's vision tower weights under the CLIPVisionModel's own names (transformers 4 and 5)."""
    tower = clip.vision_model.state_dict()
    wanted = vision.state_dict().keys()
    if set(tower) == set(wanted):
        return tower
    return {f"vision_model.{k}": v for k, v in tower.items()}
