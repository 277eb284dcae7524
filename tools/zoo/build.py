"""Build the offline model zoo the way FusionBench's CLIP zoo was built, at toy scale, from real data.

1. Split each of the eight tasks' images (``sources.py``) into disjoint test / validation / train sets with a seeded
   permutation.
2. "Pretrain" a tiny CLIP (transformers ``CLIPModel``: real CLIP BPE tokenizer, small towers) contrastively on a
   captioned corpus that shares no image with any task (``corpus.py``): glyphs of other characters, another artist's
   icons, black-and-white emoji, serif scripts. Each batch holds distinct captions. The fingerprints of its images
   are saved, so a test can check that no task image is among them.
3. Fine-tune only the vision tower per task on its train set (Adam, fixed steps) with the frozen zero-shot head of
   the pretrained model as classifier, as in the task-vector papers, while keeping the pretrained model's image
   embeddings of the corpus (``finetune_anchor``). The same again with rank-8 LoRA factors in place of the whole
   tower (``lora.py``), for the LoRA pool.
4. Save the hub layouts in float16: the pretrained ``CLIPModel`` with tokenizer and image processor, one
   ``CLIPVisionModel`` and one PEFT adapter per task, the splits as parquet, and ``zoo.json`` describing it all.

Run ``python -m tools.zoo.build OUT`` (``pip install "merge-rs[zoo]"`` plus the Debian packages named in
``sources.py``: ``make zoo``). Deterministic from ``--seed`` on a given machine.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from merge_rs.clip.heads import compute_head
from merge_rs.clip.tasks import get_task
from .corpus import pretraining_corpus
from .hashes import HASH_FILE, distinct, fingerprint
from .lora import save_adapter
from .model import new_clip
from .resolution import drawn_at
from .settings import ZooSettings
from .slices import slice_captions
from .splits import SPLITS, split_indices
from .training import anchor_pool, finetune, pretrain, tokenize_captions
from .sources import SOURCES, Images

def build_zoo(out: Path, settings: ZooSettings = ZooSettings(), log=print) -> dict[str, Any]:
    import torch

    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(True)
    rng = random.Random(settings.seed)
    if out.exists():
        shutil.rmtree(out)
    staging = out.with_name(out.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()

    clip, processor = _new_clip(staging, settings)
    splits: dict[str, dict[str, Images]] = {}
    for name in settings.tasks:
        with drawn_at(settings.image_size):
            images, labels, groups = distinct(*SOURCES[name]())
        parts = split_indices(len(images), settings, rng, groups)
        splits[name] = {k: ([images[i] for i in idx], [labels[i] for i in idx]) for k, idx in parts.items()}
        log(f"{name}: " + ", ".join(f"{k} {len(v[0])}" for k, v in splits[name].items()))
    with drawn_at(settings.image_size):
        corpus = pretraining_corpus(settings.seed)
    for name in settings.tasks:
        if "slice" in splits[name]:
            images, labels = splits[name].pop("slice")
            prompts = [tuple(get_task(name).prompts(c)) for c in get_task(name).classnames]
            captions = slice_captions(name, labels, prompts, settings.class_caption_share, settings.seed)
            corpus[f"slice_{name}"] = list(zip(images, captions))
    log("pretraining corpus: " + ", ".join(f"{k} {len(v)}" for k, v in corpus.items()))
    corpus_pixels = {k: _pixels(processor, [image for image, _ in v]) for k, v in corpus.items()}
    corpus_captions = {k: [captions for _, captions in v] for k, v in corpus.items()}
    staging.mkdir(parents=True, exist_ok=True)
    hashes = sorted({fingerprint(image) for part in corpus.values() for image, _ in part})
    (staging / HASH_FILE).write_text("\n".join(hashes) + "\n")

    token_ids, attention_mask, rows = tokenize_captions(processor.tokenizer, corpus_captions)
    pretrain(clip, corpus_pixels, rows, token_ids, attention_mask, settings, rng, log)
    save_float16(clip, staging / "pretrained")
    processor.save_pretrained(staging / "pretrained")

    for name in settings.tasks:
        train_images, train_labels = (a + b for a, b in zip(splits[name]["train"], splits[name].pop("extra")))
        with torch.no_grad():
            head = compute_head(clip, processor.tokenizer, get_task(name))
        vision = finetune(clip, head, _pixels(processor, train_images), torch.tensor(train_labels), settings, name,
                          log, anchor_pool(corpus_pixels, name) if settings.anchor_for(name) else None)
        save_float16(vision, staging / "models" / name)
        adapter = finetune(clip, head, _pixels(processor, train_images), torch.tensor(train_labels), settings, name,
                           log, anchor_pool(corpus_pixels, name) if settings.anchor_for(name) else None, lora=True)
        save_adapter(adapter, staging / "adapters" / name)
        save_splits(staging / "datasets" / name, splits[name], name)

    manifest = {
        "description": "A tiny CLIP pretrained on a captioned corpus disjoint from its eight tasks and fine-tuned per "
                       "task (vision tower).",
        "pretrained": "pretrained",
        "models": {name: f"models/{name}" for name in settings.tasks},
        "adapters": {name: f"adapters/{name}" for name in settings.tasks},
        "datasets": {name: f"datasets/{name}" for name in settings.tasks},
        "pretraining_hashes": HASH_FILE,
        "split_sizes": {name: {k: len(v[1]) for k, v in parts.items()} for name, parts in splits.items()},
        "settings": asdict(settings),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (staging / "zoo.json").write_text(json.dumps(manifest, indent=2) + "\n")
    staging.rename(out)
    log(f"zoo written to {out} in {manifest['build_seconds']} s")
    return manifest


def _new_clip(staging: Path, settings: ZooSettings):
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    from .tokenizer import write_clip_tokenizer_files

    tok_dir = staging / "tokenizer-files"
    vocab = write_clip_tokenizer_files(tok_dir, settings.bpe_merges)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=settings.max_text_tokens)
    shutil.rmtree(tok_dir)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": settings.image_size},
        crop_size={"height": settings.image_size, "width": settings.image_size},
    )
    return new_clip(settings, tokenizer, vocab), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_float16(model, directory: Path) -> None:
    """Save a float16 copy of ``model`` (what ships; training goes on in float32)."""
    import copy

    import torch

    copy.deepcopy(model).to(torch.float16).save_pretrained(directory)


def _pixels(processor, images):
    return processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]


def save_splits(directory: Path, parts: dict[str, Images], name: str, splits: tuple[str, ...] = SPLITS) -> None:
    """Write ``splits`` of task ``name`` (each ``parts[split]``: images and labels) as ``SPLIT.parquet``, each image
    as :func:`stored` keeps it."""
    from datasets import ClassLabel, Dataset, Features, Image

    features = Features({"image": Image(), "label": ClassLabel(names=list(get_task(name).classnames))})
    directory.mkdir(parents=True, exist_ok=True)
    for split in splits:
        images, labels = parts[split]
        Dataset.from_dict({"image": [stored(im) for im in images], "label": labels}, features=features).to_parquet(
            directory / f"{split}.parquet")


def stored(image: Any) -> Any:
    """How an image ships: a colour image as lossless WebP (the same pixels in about three quarters of PNG's bytes),
    any other as PNG (``datasets``' default)."""
    if image.mode != "RGB":
        return image
    encoded = io.BytesIO()
    image.save(encoded, format="WEBP", lossless=True, quality=100, method=6, exact=True)
    return {"bytes": encoded.getvalue(), "path": None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=ZooSettings.pretrain_steps)
    parser.add_argument("--finetune-steps", type=int, default=ZooSettings.finetune_steps)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 while another torch job runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other zoo setting")
    args = parser.parse_args(argv)
    try:
        settings = ZooSettings(seed=args.seed, pretrain_steps=args.pretrain_steps,
                               finetune_steps=args.finetune_steps).with_pairs(args.set)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    import torch

    torch.set_num_threads(args.threads)
    build_zoo(args.out, settings)


if __name__ == "__main__":
    main()
