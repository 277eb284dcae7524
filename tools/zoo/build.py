"""Build the offline model zoo the way FusionBench's CLIP zoo was built, at toy scale, from real data.

1. Split each of the eight tasks' images (``sources.py``) into disjoint test / validation / train sets with a seeded
   permutation.
2. "Pretrain" a tiny CLIP (transformers ``CLIPModel``: real CLIP BPE tokenizer, small towers) contrastively on a
   captioned corpus that shares no image with any task (``corpus.py``): glyphs of other characters, another artist's
   icons, black-and-white emoji, serif scripts. Each batch holds distinct captions. The fingerprints of its images
   are saved, so a test can check that no task image is among them.
3. Fine-tune only the vision tower per task on its train set (Adam, fixed steps) with the frozen zero-shot head of
   the pretrained model as classifier, as in the task-vector papers.
4. Save the hub layouts: the pretrained ``CLIPModel`` with tokenizer and image processor, one ``CLIPVisionModel``
   per task, the splits as parquet, and ``zoo.json`` describing it all.

Run ``python -m tools.zoo.build OUT`` (``pip install "merge-rs[zoo]"`` plus the Debian packages named in
``sources.py``: ``make zoo``). Deterministic from ``--seed`` on a given machine.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from merge_rs.clip.tasks import get_task
from .corpus import pretraining_corpus
from .hashes import HASH_FILE, fingerprint
from .sources import SOURCES, Images

SPLITS = ("test", "validation", "train")


@dataclass(frozen=True)
class ZooSettings:
    """Everything that decides the zoo's contents."""

    seed: int = 0
    tasks: tuple[str, ...] = ("mnist", "digits", "fashion_mnist", "emoji", "icons", "textures", "letters", "scripts")
    test_size: int = 1000  # at most half of a source
    validation_size: int = 250  # at most an eighth
    train_size: int = 1000  # at most the rest; what ships
    finetune_extra: int = 3000  # images past the shipped train split that fine-tuning also sees (if the source has them)
    image_size: int = 32
    patch_size: int = 8
    hidden: int = 80
    layers: int = 4
    heads: int = 4
    text_layers: int = 2
    bpe_merges: int = 4096
    max_text_tokens: int = 32
    projection_dim: int = 64
    pretrain_steps: int = 4000
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3
    finetune_steps: int = 600
    finetune_batch: int = 64
    finetune_lr: float = 1e-4
    finetune_shift: int = 2


def split_indices(n: int, settings: ZooSettings, rng: random.Random) -> dict[str, list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    test = min(settings.test_size, n // 2)
    validation = min(settings.validation_size, n // 8)
    rest = order[test + validation:]
    return {"test": order[:test], "validation": order[test:test + validation], "train": rest[:settings.train_size],
            "extra": rest[settings.train_size:settings.train_size + settings.finetune_extra]}


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
        images, labels = SOURCES[name]()
        parts = split_indices(len(images), settings, rng)
        splits[name] = {k: ([images[i] for i in idx], [labels[i] for i in idx]) for k, idx in parts.items()}
        log(f"{name}: " + ", ".join(f"{k} {len(v[0])}" for k, v in splits[name].items()))
    corpus = pretraining_corpus(settings.seed)
    log("pretraining corpus: " + ", ".join(f"{k} {len(v)}" for k, v in corpus.items()))
    corpus_pixels = {k: _pixels(processor, [image for image, _ in v]) for k, v in corpus.items()}
    corpus_captions = {k: [captions for _, captions in v] for k, v in corpus.items()}
    staging.mkdir(parents=True, exist_ok=True)
    hashes = sorted({fingerprint(image) for part in corpus.values() for image, _ in part})
    (staging / HASH_FILE).write_text("\n".join(hashes) + "\n")

    _pretrain(clip, processor.tokenizer, corpus_pixels, corpus_captions, settings, rng, log)
    clip.save_pretrained(staging / "pretrained")
    processor.save_pretrained(staging / "pretrained")

    for name in settings.tasks:
        train_images, train_labels = (a + b for a, b in zip(splits[name]["train"], splits[name].pop("extra")))
        vision = _finetune(clip, processor.tokenizer, name, _pixels(processor, train_images), train_labels,
                           settings, log)
        vision.save_pretrained(staging / "models" / name)
        save_splits(staging / "datasets" / name, splits[name], name)

    manifest = {
        "description": "A tiny CLIP pretrained on a captioned corpus disjoint from its eight tasks and fine-tuned per "
                       "task (vision tower).",
        "pretrained": "pretrained",
        "models": {name: f"models/{name}" for name in settings.tasks},
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
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from .tokenizer import write_clip_tokenizer_files

    tok_dir = staging / "tokenizer-files"
    vocab = write_clip_tokenizer_files(tok_dir, settings.bpe_merges)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=settings.max_text_tokens)
    shutil.rmtree(tok_dir)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": settings.image_size},
        crop_size={"height": settings.image_size, "width": settings.image_size},
    )
    tower = dict(hidden_size=settings.hidden, intermediate_size=4 * settings.hidden,
                 num_attention_heads=settings.heads)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=vocab, num_hidden_layers=settings.text_layers,
                         max_position_embeddings=settings.max_text_tokens, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(tower, num_hidden_layers=settings.layers, image_size=settings.image_size,
                           patch_size=settings.patch_size),
        projection_dim=settings.projection_dim,
    )
    return CLIPModel(config), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _pixels(processor, images):
    return processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]


def _text_embeddings(clip, tokenizer, texts: list[str]):
    tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    out = clip.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return clip.text_projection(out.pooler_output)


def _image_embeddings(clip, vision, pixel_values):
    return clip.visual_projection(vision(pixel_values=pixel_values).pooler_output)


def _pretrain(clip, tokenizer, pixels, captions, settings: ZooSettings, rng: random.Random, log) -> None:
    """Contrastive training on the corpus: each step draws a part, then an image and one of its captions, until the
    batch holds ``pretrain_batch`` distinct captions."""
    import torch
    import torch.nn.functional as F

    parts = sorted(pixels)
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=settings.pretrain_lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, settings.pretrain_steps))
    clip.train()
    for step in range(settings.pretrain_steps):
        texts: list[str] = []
        images = []
        while len(texts) < settings.pretrain_batch:
            part = rng.choice(parts)
            i = rng.randrange(len(captions[part]))
            text = rng.choice(captions[part][i])
            if text not in texts:
                texts.append(text)
                images.append(pixels[part][i])
        batch = _shift(torch.stack(images), settings.finetune_shift, generator)
        img = F.normalize(_image_embeddings(clip, clip.vision_model, batch), dim=-1)
        txt = F.normalize(_text_embeddings(clip, tokenizer, texts), dim=-1)
        logits = clip.logit_scale.exp() * img @ txt.T
        target = torch.arange(len(texts))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if step % 250 == 0 or step == settings.pretrain_steps - 1:
            log(f"pretrain step {step}: contrastive loss {loss.item():.3f}")
    clip.eval()


def _cosine(step: int, total: int, warmup: int = 20) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _finetune(clip, tokenizer, name: str, pixel_values, labels: list[int], settings: ZooSettings, log):
    import copy

    import torch
    import torch.nn.functional as F

    from merge_rs.clip.heads import compute_head

    with torch.no_grad():
        head = compute_head(clip, tokenizer, get_task(name))
        scale = clip.logit_scale.exp()
    vision = copy.deepcopy(clip.vision_model)
    vision.train()
    optimizer = torch.optim.Adam(vision.parameters(), lr=settings.finetune_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _cosine(s, settings.finetune_steps))
    target_all = torch.tensor(labels)
    generator = torch.Generator().manual_seed(settings.seed)
    for step in range(settings.finetune_steps):
        idx = torch.randint(len(labels), (settings.finetune_batch,), generator=generator)
        images = _shift(pixel_values[idx], settings.finetune_shift, generator)
        emb = F.normalize(_image_embeddings(clip, vision, images), dim=-1)
        loss = F.cross_entropy(scale * emb @ head.T, target_all[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    log(f"fine-tuned {name}: final loss {loss.item():.3f}")
    return vision.eval()


def _shift(images, pixels: int, generator):
    """Random translations by up to ``pixels`` in each direction (edge padding), one per image."""
    import torch
    import torch.nn.functional as F

    if pixels == 0:
        return images
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    size = images.shape[-1]
    offsets = torch.randint(2 * pixels + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([p[:, y:y + size, x:x + size] for p, (y, x) in zip(padded, offsets)])


def save_splits(directory: Path, parts: dict[str, Images], name: str, splits: tuple[str, ...] = SPLITS) -> None:
    """Write ``splits`` of task ``name`` (each ``parts[split]``: images and labels) as ``SPLIT.parquet``."""
    from datasets import ClassLabel, Dataset, Features, Image

    features = Features({"image": Image(), "label": ClassLabel(names=list(get_task(name).classnames))})
    directory.mkdir(parents=True, exist_ok=True)
    for split in splits:
        images, labels = parts[split]
        Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
            directory / f"{split}.parquet")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-steps", type=int, default=ZooSettings.pretrain_steps)
    parser.add_argument("--finetune-steps", type=int, default=ZooSettings.finetune_steps)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    build_zoo(args.out, ZooSettings(seed=args.seed, pretrain_steps=args.pretrain_steps,
                                    finetune_steps=args.finetune_steps))


if __name__ == "__main__":
    main()
