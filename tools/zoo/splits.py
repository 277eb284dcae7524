"""How a task's source is split: disjoint test, validation and train sets, images past the train set that
fine-tuning also sees, and (when the settings ask for it) a pretraining slice that no split holds."""

from __future__ import annotations

import random

from .settings import ZooSettings
from .slices import slice_size

SPLITS = ("test", "validation", "train")


def split_indices(n: int, settings: ZooSettings, rng: random.Random) -> dict[str, list[int]]:
    """Index lists per part, from one seeded permutation. Test takes at most half of the source (a quarter when a
    pretraining slice is cut), validation at most an eighth, the slice at most a quarter, train the rest."""
    order = list(range(n))
    rng.shuffle(order)
    cut = slice_size(n, settings.pretrain_slice)
    test = min(settings.test_size, n // 4 if cut else n // 2)
    validation = min(settings.validation_size, n // 8)
    parts = {"test": order[:test], "validation": order[test:test + validation]}
    if cut:
        parts["slice"] = order[test + validation:test + validation + cut]
    rest = order[test + validation + cut:]
    parts["train"] = rest[:settings.train_size]
    parts["extra"] = rest[settings.train_size:settings.train_size + settings.finetune_extra]
    return parts
