"""Render every task split, the pretraining corpus and the in-domain slices once, into a cache that ``run`` reads.

The cache is a directory with ``images.npz`` (uint8 ``[N, 3, H, W]`` arrays, resized and cropped by CLIP's image
processor, not yet normalised; labels as int64) and ``meta.json`` (the split settings, each task's prompts per class,
the corpus captions, the tokenizer's files, and the number of pretraining images whose fingerprint is in a split,
which must be 0). Only what decides the images is fixed here; every training setting stays free for ``run``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..settings import ZooSettings

IMAGES = "images.npz"
META = "meta.json"
CACHED_SETTINGS = ("seed", "tasks", "test_size", "validation_size", "train_size", "finetune_extra", "pretrain_slice",
                   "image_size", "bpe_merges")


def _uint8(processor: Any, images: list) -> Any:
    import numpy as np

    if not images:
        size = processor.crop_size["height"]
        return np.zeros((0, 3, size, size), dtype=np.uint8)
    out = processor(images=[im.convert("RGB") for im in images], do_rescale=False, do_normalize=False,
                    return_tensors="np")["pixel_values"]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _store(arrays: dict[str, Any], key: str, processor: Any, images: list, labels: list[int]) -> None:
    import numpy as np

    arrays[f"{key}/images"] = _uint8(processor, images)
    arrays[f"{key}/labels"] = np.array(labels, dtype=np.int64)


def prepare(out: Path, settings: ZooSettings, log=print) -> dict[str, Any]:
    """Write the cache for ``settings``'s split fields into ``out`` (a new directory)."""
    import tempfile

    import numpy as np
    from transformers import CLIPImageProcessor

    from merge_rs.clip.tasks import get_task

    from ..corpus import pretraining_corpus
    from ..hashes import distinct, fingerprint
    from ..resolution import drawn_at
    from ..sources import SOURCES
    from ..splits import split_indices
    from ..tokenizer import write_clip_tokenizer_files

    size = settings.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    rng = random.Random(settings.seed)
    arrays: dict[str, Any] = {}
    prompts: dict[str, list[list[str]]] = {}
    split_prints: set[str] = set()
    pretraining_prints: list[str] = []
    slices: dict[str, tuple[list, list[int]]] = {}
    for name in settings.tasks:
        with drawn_at(settings.image_size):
            images, labels, groups = distinct(*SOURCES[name]())
        task = get_task(name)
        prompts[name] = [task.prompts(c) for c in task.classnames]
        for part, idx in split_indices(len(images), settings, rng, groups).items():
            chosen, chosen_labels = [images[i] for i in idx], [labels[i] for i in idx]
            if part == "slice":
                slices[name] = (chosen, chosen_labels)
                continue
            _store(arrays, f"task/{name}/{part}", processor, chosen, chosen_labels)
            split_prints.update(fingerprint(im) for im in chosen)
    for name, (chosen, chosen_labels) in slices.items():
        _store(arrays, f"task/{name}/slice", processor, chosen, chosen_labels)
        pretraining_prints.extend(fingerprint(im) for im in chosen)
    for name in settings.tasks:
        log(f"{name}: " + ", ".join(f"{k.split('/')[2]} {len(v)}" for k, v in arrays.items()
                                     if k.startswith(f"task/{name}/") and k.endswith("/labels")))
    captions: dict[str, list[list[str]]] = {}
    with drawn_at(settings.image_size):
        corpus = pretraining_corpus(settings.seed)
    for part, items in corpus.items():
        arrays[f"corpus/{part}/images"] = _uint8(processor, [im for im, _ in items])
        captions[part] = [list(c) for _, c in items]
        pretraining_prints.extend(fingerprint(im) for im, _ in items)
        log(f"corpus {part}: {len(items)}")
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(Path(tmp), settings.bpe_merges)
        tokenizer = {f.name: f.read_text(encoding="utf-8") for f in Path(tmp).iterdir()}
    meta = {"settings": {k: getattr(settings, k) for k in CACHED_SETTINGS}, "prompts": prompts,
            "corpus_captions": captions, "tokenizer": tokenizer,
            "leaked_pretraining_images": sum(p in split_prints for p in pretraining_prints)}
    if meta["leaked_pretraining_images"]:
        raise RuntimeError(f"{meta['leaked_pretraining_images']} pretraining images are also in a task split")
    out.mkdir(parents=True)
    np.savez_compressed(out / IMAGES, **arrays)
    (out / META).write_text(json.dumps(meta) + "\n")
    log(f"cache written to {out}: {(out / IMAGES).stat().st_size / 1e6:.1f} MB of images")
    return meta


def check_compatible(meta: dict[str, Any], settings: ZooSettings) -> None:
    """Refuse settings whose split fields differ from the cache's (they would need another cache)."""
    for key in CACHED_SETTINGS:
        cached, wanted = meta["settings"][key], getattr(settings, key)
        if (list(cached) if isinstance(cached, (list, tuple)) else cached) != \
                (list(wanted) if isinstance(wanted, tuple) else wanted):
            raise ValueError(f"setting {key} is {wanted!r} but the cache was prepared with {cached!r}")
