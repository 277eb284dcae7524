"""How a task's source is split: disjoint test, validation and train sets, images past the train set that
fine-tuning also sees, and (when the settings ask for it) a pretraining slice that no split holds.

A source may group its images (a game unit's animation frames): a group then never straddles two parts, so a test
image's near twin is never trained on."""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

from .settings import ZooSettings
from .slices import slice_size

SPLITS = ("test", "validation", "train")


def split_indices(n: int, settings: ZooSettings, rng: random.Random,
                  groups: Sequence[Hashable] | None = None) -> dict[str, list[int]]:
    """Index lists per part, from one seeded permutation of the groups (of the images when ``groups`` is None).
    Test takes at most half of the source (a quarter when a pretraining slice is cut), validation at most an eighth,
    the slice at most a quarter, train the rest; a part takes whole groups until it holds its share of images."""
    cut = slice_size(n, settings.pretrain_slice)
    quotas = {"test": min(settings.test_size, n // 4 if cut else n // 2),
              "validation": min(settings.validation_size, n // 8)}
    if cut:
        quotas["slice"] = cut
    quotas["train"] = settings.train_size
    quotas["extra"] = settings.finetune_extra
    parts: dict[str, list[int]] = {part: [] for part in quotas}
    names, current = iter(quotas), None
    for members in shuffled_groups(n, rng, groups):
        while current is None or len(parts[current]) >= quotas[current]:
            current = next(names, None)
            if current is None:
                return parts
        parts[current] += members
    return parts


def shuffled_groups(n: int, rng: random.Random, groups: Sequence[Hashable] | None = None) -> list[list[int]]:
    """The indices of each group's images, the groups in a seeded random order (each image a group of its own when
    ``groups`` is None, which shuffles ``range(n)`` as ``rng.shuffle`` does)."""
    if groups is None:
        members = [[i] for i in range(n)]
    elif len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} images")
    else:
        by_group: dict[Hashable, list[int]] = {}
        for i, group in enumerate(groups):
            by_group.setdefault(group, []).append(i)
        members = list(by_group.values())
    rng.shuffle(members)
    return members
