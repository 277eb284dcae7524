"""LoRA fine-tunes of the zoo's vision tower with PEFT: rank-r adapters on every attention projection and MLP layer,
trained by the same loop as the full fine-tunes and saved as PEFT adapters over the pretrained ``CLIPModel``.

The tower is wrapped under the attribute ``vision_model``, so the adapter's module names are the pretrained
checkpoint's (``vision_model.encoder.layers.0.self_attn.q_proj``): a LoRA reader finds each module's weight there
without mistaking it for the text tower's module of the same name.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .settings import ZooSettings

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


def wrap_lora(vision: Any, settings: ZooSettings) -> tuple[Any, Any]:
    """(the PEFT model, the adapted tower inside it) for a copy of ``vision``; only the LoRA factors train. The
    factors' random start comes from a generator seeded by the settings, leaving torch's global one as it was."""
    import torch
    from peft import LoraConfig, get_peft_model

    holder = torch.nn.Module()
    holder.vision_model = copy.deepcopy(vision)
    config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, target_modules=TARGETS,
                        lora_dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        wrapped = get_peft_model(holder, config)
    return wrapped, wrapped.base_model.model.vision_model


def save_adapter(wrapped: Any, directory: Path) -> None:
    """The adapter in float16 (what ships), as PEFT saves it, less PEFT's empty model-card template."""
    import torch

    copy.deepcopy(wrapped).to(torch.float16).save_pretrained(directory)
    (directory / "README.md").unlink(missing_ok=True)
