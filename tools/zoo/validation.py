"""Give the shipped four-task zoo a validation split without retraining it.

The shipped zoo was drawn by an earlier builder: per task, a seeded permutation of the source gave 500 test images,
then 1,000 train images, then up to 1,500 images for contrastive pretraining (a small source lent pretraining part of
its train budget). That rule is :func:`legacy_split_indices`. Re-drawing it from the same sources reproduces the
shipped train and test splits image for image, which :func:`add_validation_split` checks by fingerprint and label
before it changes anything. Then, per task:

- where the source has images that neither pretraining nor fine-tuning saw (mnist, fashion_mnist), the validation
  split is the first ``unseen`` of them;
- where it has none (digits and emoji: pretraining took the rest), the validation split is the last ``carved`` images
  of the test split, which keeps the others.

``zoo.json`` records the split sizes and where each validation split came from. Run
``python -m tools.zoo.validation python/merge_rs/zoo/data`` (the ``zoo`` extra and the Debian packages of
``make zoo``); it refuses a zoo that already has validation splits.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from .build import save_splits
from .hashes import fingerprint
from .sources import SOURCES, Images

LEGACY_TASKS = ("mnist", "digits", "fashion_mnist", "emoji")


def legacy_split_indices(n: int, rng: random.Random, test: int = 500, train: int = 1000,
                         pretrain: int = 1500) -> dict[str, list[int]]:
    """The shipped zoo's rule: test, train, pretraining, and what is left (``unseen``)."""
    order = list(range(n))
    rng.shuffle(order)
    test_part, train_part, rest = order[:test], order[test:test + train], order[test + train:]
    if len(rest) < 100:  # a small source gave pretraining a share of its train budget
        take = max(0, min(len(train_part) // 2, pretrain) - len(rest))
        rest, train_part = rest + train_part[:take], train_part[take:]
    return {"test": test_part, "train": train_part, "pretrain": rest[:pretrain], "unseen": rest[pretrain:]}


def add_validation_split(zoo: Path, seed: int = 0, unseen: int = 250, carved: int = 200,
                         log=print) -> dict[str, Any]:
    """Write ``validation.parquet`` for every task of the shipped zoo at ``zoo`` (and a shorter ``test.parquet``
    where validation is carved from it); return the updated manifest."""
    from datasets import Dataset

    manifest_path = zoo / "zoo.json"
    manifest = json.loads(manifest_path.read_text())
    if "split_sizes" in manifest:
        raise SystemExit(f"{zoo}: this zoo already has validation splits")
    rng = random.Random(seed)
    sources, plans = {}, {}
    for name in LEGACY_TASKS:  # every task is checked before any file changes
        images, labels = sources[name] = SOURCES[name]()
        parts = legacy_split_indices(len(images), rng)
        for split in ("test", "train"):
            shipped = Dataset.from_parquet(str(zoo / manifest["datasets"][name] / f"{split}.parquet"))
            _check_shipped(shipped, images, labels, parts[split], f"{name}/{split}")
        plans[name] = _plan(parts, unseen, carved)
    for name, plan in plans.items():
        images, labels = sources[name]
        rows = {split: ([images[i] for i in plan[split]], [labels[i] for i in plan[split]]) for split in plan["write"]}
        save_splits(zoo / manifest["datasets"][name], rows, name, plan["write"])
        log(f"{name}: validation {len(plan['validation'])} ({plan['origin']}), test {len(plan['test'])}")
    manifest["split_sizes"] = {name: {s: len(plans[name][s]) for s in ("test", "validation", "train")}
                               for name in LEGACY_TASKS}
    manifest["validation"] = {name: plans[name]["origin"] for name in LEGACY_TASKS}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _check_shipped(shipped, images: Images, labels: list[int], indices: list[int], what: str) -> None:
    same = (len(shipped) == len(indices)
            and list(shipped["label"]) == [labels[i] for i in indices]
            and [fingerprint(im) for im in shipped["image"]] == [fingerprint(images[i]) for i in indices])
    if not same:
        raise SystemExit(f"{what}: the sources no longer reproduce the shipped split; nothing was changed")


def _plan(parts: dict[str, list[int]], unseen: int, carved: int) -> dict[str, Any]:
    """The splits' indices, the split files to (re)write, and where validation came from."""
    if parts["unseen"]:
        return {"test": parts["test"], "validation": parts["unseen"][:unseen], "train": parts["train"],
                "write": ("validation",), "origin": "images neither pretraining nor fine-tuning saw"}
    keep = len(parts["test"]) - carved
    return {"test": parts["test"][:keep], "validation": parts["test"][keep:], "train": parts["train"],
            "write": ("test", "validation"), "origin": f"the last {carved} images of the former test split"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("zoo", type=Path, help="the zoo's data directory (holding zoo.json)")
    parser.add_argument("--seed", type=int, default=0, help="the seed the zoo was built with")
    args = parser.parse_args(argv)
    add_validation_split(args.zoo, args.seed)


if __name__ == "__main__":
    main()
