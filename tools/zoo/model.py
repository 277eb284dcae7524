"""The zoo's tiny CLIP: transformers' ``CLIPModel`` with the settings' towers (shared by the builder and the
experiments)."""

from __future__ import annotations

from typing import Any

from .settings import ZooSettings


def new_clip(settings: ZooSettings, tokenizer: Any, vocab_size: int) -> Any:
    """A freshly initialised ``CLIPModel`` (seed torch before calling for a reproducible one)."""
    from transformers import CLIPConfig, CLIPModel

    def tower(width: int) -> dict[str, int]:
        return dict(hidden_size=width, intermediate_size=4 * width, num_attention_heads=settings.heads)

    config = CLIPConfig(
        text_config=dict(tower(settings.text_hidden or settings.hidden), vocab_size=vocab_size,
                         num_hidden_layers=settings.text_layers, max_position_embeddings=settings.max_text_tokens,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(tower(settings.hidden), num_hidden_layers=settings.layers, image_size=settings.image_size,
                           patch_size=settings.patch_size),
        projection_dim=settings.projection_dim,
    )
    return CLIPModel(config)
