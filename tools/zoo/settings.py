"""Everything that decides the zoo's contents, in one frozen dataclass shared by the builder and the experiments.

It imports nothing heavy, so the experiment harness can run where merge-rs itself is not installed (a GPU machine
with torch and transformers alone).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class ZooSettings:
    """Everything that decides the zoo's contents."""

    seed: int = 0
    tasks: tuple[str, ...] = ("mnist", "digits", "fashion_mnist", "symbols", "icons", "textures", "letters", "scripts")
    test_size: int = 1000  # at most half of a source (a quarter with pretraining slices)
    validation_size: int = 250  # at most an eighth
    train_size: int = 1000  # at most the rest; what ships
    finetune_extra: int = 3000  # images past the shipped train split that fine-tuning also sees (if the source has them)
    pretrain_slice: int = 1500  # per task: images of its own source, in no split, added to the pretraining corpus
    class_caption_share: float = 0.1  # share of slice images captioned with their class's prompts (else the domain)
    image_size: int = 64  # sources drawn at 64 px with 16 px patches: the best of 32, 64 and 96 (EXPERIMENTS.md)
    patch_size: int = 16
    hidden: int = 80
    layers: int = 4
    heads: int = 4
    text_hidden: int = 0  # 0: the vision tower's width
    text_layers: int = 2
    bpe_merges: int = 4096
    max_text_tokens: int = 32
    projection_dim: int = 64
    pretrain_steps: int = 4000
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3
    finetune_steps: int = 900
    finetune_steps_by_task: tuple[str, ...] = ()  # TASK=STEPS: another length for a task (its full and LoRA fine-tunes)
    finetune_batch: int = 64
    finetune_lr: float = 1e-3
    finetune_decay_to_base: float = 0.0  # decoupled weight decay toward θ₀ while fine-tuning (per step: lr × this)
    finetune_anchor: float = 10.0  # weight of keeping θ₀'s image embeddings on the corpus, less the task's own slice
    finetune_anchor_by_task: tuple[str, ...] = ()  # TASK=WEIGHT: another anchor weight for a task (full and LoRA)
    finetune_shift: int = 2
    lora_rank: int = 8  # the LoRA fine-tunes (attention projections and MLPs of the vision tower)
    lora_alpha: float = 16.0
    lora_lr: float = 3e-3

    def __post_init__(self) -> None:
        self.steps_for("")  # refuses a malformed per-task item before any work
        self.anchor_for("")

    def steps_for(self, task: str) -> int:
        """The fine-tuning steps of ``task``: its own length in ``finetune_steps_by_task``, else ``finetune_steps``."""
        steps = _per_task(self.finetune_steps_by_task, "finetune_steps_by_task", "STEPS", task, int)
        return self.finetune_steps if steps is None else steps

    def anchor_for(self, task: str) -> float:
        """The anchor weight of ``task``: its own in ``finetune_anchor_by_task``, else ``finetune_anchor``."""
        weight = _per_task(self.finetune_anchor_by_task, "finetune_anchor_by_task", "WEIGHT", task, float)
        return self.finetune_anchor if weight is None else weight

    def with_pairs(self, pairs: list[str]) -> "ZooSettings":
        """A copy with ``KEY=VALUE`` overrides, as ``--set`` takes them on the command line."""
        overrides = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"--set takes KEY=VALUE (got '{pair}')")
            overrides[key.strip()] = value.strip()
        return self.with_overrides(overrides)

    def with_overrides(self, overrides: dict[str, Any]) -> "ZooSettings":
        """A copy with ``overrides`` (field name → value, strings converted to the field's type)."""
        kinds = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        unknown = sorted(set(overrides) - set(kinds))
        if unknown:
            raise ValueError(f"unknown zoo setting(s): {', '.join(unknown)} (known: {', '.join(sorted(kinds))})")
        converted = {}
        for name, value in overrides.items():
            kind = kinds[name]
            if kind is tuple:
                converted[name] = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
            else:
                converted[name] = kind(value)
        return replace(self, **converted)


def _per_task(items: tuple[str, ...], setting: str, what: str, task: str, kind: type) -> Any:
    """The value ``items`` (``TASK=VALUE`` strings) give ``task``, else None; every item is checked."""
    found = None
    for item in items:
        name, sep, value = item.partition("=")
        try:
            parsed = kind(value.strip()) if sep else None
        except ValueError:
            parsed = None
        if parsed is None or parsed < 0:
            raise ValueError(f"{setting} takes TASK={what} items (got '{item}')")
        if name.strip() == task:
            found = parsed
    return found
