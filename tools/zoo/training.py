"""The zoo's two training loops, on whatever device the model is on: contrastive pretraining of the tiny CLIP and
fine-tuning of its vision tower per task against the frozen zero-shot head.

Images come as uint8 tensors ``[N, 3, H, W]`` (normalised here with CLIP's mean and std) or as already normalised
float tensors. Captions come pre-tokenised: ``token_ids`` / ``attention_mask`` hold one row per distinct caption,
and each image lists the rows of its captions.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any, Callable

from .settings import ZooSettings

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Log = Callable[[str], None]


def as_pixels(images: Any) -> Any:
    """Float pixels as CLIP's image processor gives them (uint8 inputs are rescaled and normalised)."""
    import torch

    if images.dtype != torch.uint8:
        return images
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def shift(images: Any, pixels: int, generator: Any) -> Any:
    """Random translations by up to ``pixels`` in each direction (edge padding), one per image, in one gather."""
    import torch
    import torch.nn.functional as F

    if pixels == 0:
        return images
    padded = F.pad(images, (pixels,) * 4, mode="replicate")
    n, size = len(images), images.shape[-1]
    offsets = torch.randint(2 * pixels + 1, (n, 2), generator=generator).to(images.device)
    span = torch.arange(size, device=images.device)
    rows = (offsets[:, 0:1] + span).view(n, 1, size, 1)
    cols = (offsets[:, 1:2] + span).view(n, 1, 1, size)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


def cosine(step: int, total: int, warmup: int = 20) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def text_embeddings(clip: Any, token_ids: Any, attention_mask: Any) -> Any:
    out = clip.text_model(input_ids=token_ids, attention_mask=attention_mask)
    return clip.text_projection(out.pooler_output)


def image_embeddings(clip: Any, vision: Any, pixel_values: Any) -> Any:
    return clip.visual_projection(vision(pixel_values=pixel_values).pooler_output)


def draw_batch(captions: dict[str, list[tuple[int, ...]]], size: int, rng: random.Random
               ) -> tuple[list[int], list[tuple[str, int]]]:
    """Caption rows and (part, image index) pairs: each draw picks a part, an image, then one of its captions,
    until the batch holds ``size`` distinct captions."""
    parts = sorted(captions)
    rows: list[int] = []
    picks: list[tuple[str, int]] = []
    seen: set[int] = set()
    while len(rows) < size:
        part = rng.choice(parts)
        i = rng.randrange(len(captions[part]))
        row = rng.choice(captions[part][i])
        if row not in seen:
            seen.add(row)
            rows.append(row)
            picks.append((part, i))
    return rows, picks


def pretrain(clip: Any, images: dict[str, Any], captions: dict[str, list[tuple[int, ...]]], token_ids: Any,
             attention_mask: Any, settings: ZooSettings, rng: random.Random, log: Log) -> list[float]:
    """Contrastive training on the corpus (AdamW, cosine schedule); returns the loss every 250 steps."""
    import torch
    import torch.nn.functional as F

    device = clip.logit_scale.device
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=settings.pretrain_lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine(s, settings.pretrain_steps))
    target = torch.arange(settings.pretrain_batch, device=device)
    parts = sorted(images)
    pool = torch.cat([images[part] for part in parts]).to(device)  # one gather per step instead of one per image
    offsets = dict(zip(parts, [0, *itertools.accumulate(len(images[part]) for part in parts)]))
    losses = []
    started = time.perf_counter()
    clip.train()
    for step in range(settings.pretrain_steps):
        rows, picks = draw_batch(captions, settings.pretrain_batch, rng)
        picked = torch.tensor([offsets[part] + i for part, i in picks], device=device)
        batch = shift(as_pixels(pool[picked]), settings.finetune_shift, generator)
        rows_t = torch.tensor(rows, device=device)
        img = F.normalize(image_embeddings(clip, clip.vision_model, batch), dim=-1)
        txt = F.normalize(text_embeddings(clip, token_ids[rows_t], attention_mask[rows_t]), dim=-1)
        logits = clip.logit_scale.exp() * img @ txt.T
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            clip.logit_scale.clamp_(0, math.log(100))
        if step % 250 == 0 or step == settings.pretrain_steps - 1:
            losses.append(round(loss.item(), 4))
            log(f"pretrain step {step}: contrastive loss {losses[-1]:.3f} ({time.perf_counter() - started:.0f} s)")
    clip.eval()
    return losses


def anchor_pool(corpus: dict[str, Any], task: str) -> Any:
    """The images whose θ₀ embeddings fine-tuning on ``task`` keeps: the pretraining corpus without the task's own
    in-domain slice."""
    import torch

    return torch.cat([images for part, images in sorted(corpus.items()) if part != f"slice_{task}"])


def _embeddings(clip: Any, vision: Any, images: Any, chunk: int = 1024) -> Any:
    import torch
    import torch.nn.functional as F

    device = clip.logit_scale.device
    with torch.no_grad():
        return torch.cat([F.normalize(image_embeddings(clip, vision, as_pixels(images[i:i + chunk].to(device))), dim=-1)
                          for i in range(0, len(images), chunk)])


def finetune(clip: Any, head: Any, images: Any, labels: Any, settings: ZooSettings, name: str, log: Log,
             anchor: Any = None, lora: bool = False) -> Any:
    """A copy of ``clip``'s vision tower fine-tuned on ``images`` against the frozen zero-shot ``head`` (Adam,
    cosine schedule). With ``finetune_decay_to_base``, each step also pulls the weights toward θ₀; with the task's
    anchor weight (``finetune_anchor``, or its own in ``finetune_anchor_by_task``) and ``anchor`` images, each step
    also adds that weight times the squared distance between the normalised embeddings of a batch of ``anchor``
    images and θ₀'s. With ``lora``, only rank-``lora_rank``
    factors train (at ``lora_lr``), and the PEFT model comes back instead of the tower."""
    import copy

    import torch
    import torch.nn.functional as F

    from .lora import wrap_lora

    device = clip.logit_scale.device
    scale = clip.logit_scale.exp().detach()
    weight = settings.anchor_for(name)
    keep = anchor is not None and weight > 0
    kept = _embeddings(clip, clip.vision_model, anchor) if keep else None
    if lora:
        result, vision = wrap_lora(clip.vision_model, settings)
    else:
        result = vision = copy.deepcopy(clip.vision_model).requires_grad_(True)
    trained = [p for p in vision.parameters() if p.requires_grad]
    base = [p.detach().clone() for p in trained]
    vision.train()
    optimizer = torch.optim.Adam(trained, lr=settings.lora_lr if lora else settings.finetune_lr)
    steps = settings.steps_for(name)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine(s, steps))
    generator = torch.Generator().manual_seed(settings.seed)
    labels = labels.to(device)
    for _ in range(steps):
        idx = torch.randint(len(labels), (settings.finetune_batch,), generator=generator).to(images.device)
        batch = shift(as_pixels(images[idx].to(device)), settings.finetune_shift, generator)
        emb = F.normalize(image_embeddings(clip, vision, batch), dim=-1)
        loss = F.cross_entropy(scale * emb @ head.T, labels[idx.to(device)])
        if keep:
            pick = torch.randint(len(kept), (settings.finetune_batch,), generator=generator).to(anchor.device)
            moved = F.normalize(image_embeddings(clip, vision, as_pixels(anchor[pick].to(device))), dim=-1)
            drift = (moved - kept[pick.to(device)]).pow(2).sum(-1).mean()
            loss = loss + weight * drift
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if settings.finetune_decay_to_base:
            pull = schedule.get_last_lr()[0] * settings.finetune_decay_to_base
            with torch.no_grad():
                torch._foreach_lerp_(trained, base, pull)
        schedule.step()
    log(f"fine-tuned {name}{' (LoRA)' if lora else ''}: final loss {loss.item():.3f}"
        + (f" (embedding drift {drift.item():.4f})" if keep else ""))
    return result.eval()


def tokenize_captions(tokenizer: Any, captions: dict[str, list[tuple[str, ...]]], device: Any = "cpu"
                      ) -> tuple[Any, Any, dict[str, list[tuple[int, ...]]]]:
    """Every distinct caption tokenised once: ``(token_ids, attention_mask, rows)``, where ``rows[part][i]`` lists
    the rows of image i's captions."""
    distinct: dict[str, int] = {}
    rows = {part: [tuple(distinct.setdefault(c, len(distinct)) for c in caps) for caps in items]
            for part, items in captions.items()}
    tokens = tokenizer(list(distinct), padding=True, truncation=True, return_tensors="pt")
    return tokens["input_ids"].to(device), tokens["attention_mask"].to(device), rows
