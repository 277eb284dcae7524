"""Batches of processed images for the learned methods: endless shuffled batches (AdaMerging's unlabeled test
images) and the first N examples in order (Fisher's and RegMean's training images)."""

from __future__ import annotations

from typing import Any, Iterator

from ..clip.evaluate import Collate, TaskData


def _loader(item: TaskData, image_processor: Any, batch_size: int, shuffle: bool, seed: int, workers: int = 0):
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(item.data.dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=workers,
                      collate_fn=Collate(image_processor, item.data.image_column, item.data.label_column))


def endless_batches(item: TaskData, image_processor: Any, batch_size: int, seed: int) -> Iterator[Any]:
    """Pixel batches of ``batch_size`` images, reshuffled every epoch; labels are dropped (test-time adaptation
    sees no labels)."""
    epoch = 0
    while True:
        for pixels, _ in _loader(item, image_processor, batch_size, True, seed + epoch):
            yield pixels
        epoch += 1


def first_examples(item: TaskData, image_processor: Any, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """(pixels, labels) over the task's data in order; ``prepare_tasks(limit=N)`` makes it the first N."""
    yield from _loader(item, image_processor, batch_size, False, 0)
