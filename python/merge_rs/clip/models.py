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
    # The PIL image processor whether or not torchvision is installed (transformers picks torchvision's when it
    # is), so that an evaluation gives the same accuracies in every environment.
    return CLIPModel.from_pretrained(path, dtype=_COMPUTE).eval(), CLIPProcessor.from_pretrained(path, backend="pil")


def load_vision_encoder(path: Path, base: Path | None = None):
    """A ``CLIPVisionModel`` from a vision-only checkpoint, the vision tower of a full CLIP checkpoint, or a PEFT
    LoRA adapter over ``base``."""
    from transformers import CLIPModel, CLIPVisionModel

    from ..lora import is_adapter

    if is_adapter(path):
        if base is None:
            raise ValueError(f"{path} is a LoRA adapter: the model it adapts is needed too (the pool's pretrained "
                             "model, or --clip)")
        return _with_adapter(Path(path), Path(base))
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


def _with_adapter(adapter: Path, base: Path):
    """The vision encoder that the LoRA adapter stands for: θ₀ + ΔW, formed by the engine exactly as a merge reads
    the adapter (its base's tensor names, rsLoRA, ``fan_in_fan_out``, saved modules), in a temporary directory."""
    import tempfile

    from ..api import merge

    with tempfile.TemporaryDirectory(prefix="merge-rs-adapter-") as temp:
        dense = Path(temp) / "model"
        merge("task_arithmetic", [adapter], dense, pretrained=base, scaling_factor=1.0, model_card=False)
        return load_vision_encoder(dense)
