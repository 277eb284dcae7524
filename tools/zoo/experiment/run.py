"""Train and measure one setting from a prepared cache, on any torch device, writing its results as JSON.

The result file is rewritten after every stage (pretraining, fine-tuning, each measurement), so a run cut short still
leaves what it measured. Nothing here imports merge-rs.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from ..settings import ZooSettings
from ..slices import slice_captions
from . import measure
from .cache import IMAGES, META, check_compatible


def load_cache(cache: Path, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np
    import torch

    meta = json.loads((cache / META).read_text())
    with np.load(cache / IMAGES) as data:
        arrays = {key: torch.from_numpy(data[key]).to(device) for key in data.files}
    return meta, arrays


def _tokenizer(meta: dict[str, Any], settings: ZooSettings) -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in meta["tokenizer"].items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=settings.max_text_tokens)


def corpus_of(meta: dict[str, Any], arrays: dict[str, Any], settings: ZooSettings
              ) -> tuple[dict[str, Any], dict[str, list[tuple[str, ...]]]]:
    """The pretraining corpus's images and caption sets: the cached parts plus each task's in-domain slice."""
    images = {part: arrays[f"corpus/{part}/images"] for part in meta["corpus_captions"]}
    captions = {part: [tuple(c) for c in caps] for part, caps in meta["corpus_captions"].items()}
    for task in settings.tasks:
        key = f"task/{task}/slice"
        if f"{key}/labels" in arrays and len(arrays[f"{key}/labels"]):
            prompts = [tuple(p) for p in meta["prompts"][task]]
            labels = arrays[f"{key}/labels"].tolist()
            images[f"slice_{task}"] = arrays[f"{key}/images"]
            captions[f"slice_{task}"] = slice_captions(task, labels, prompts, settings.class_caption_share,
                                                       settings.seed)
    return images, captions


def heads(clip: Any, tokenizer: Any, meta: dict[str, Any], tasks: tuple[str, ...]) -> dict[str, Any]:
    """Each task's zero-shot head: per class, the mean of its prompts' normalised text embeddings, normalised."""
    import torch
    import torch.nn.functional as F

    from ..training import text_embeddings, tokenize_captions

    device = clip.logit_scale.device
    out = {}
    with torch.no_grad():
        for task in tasks:
            per_class = [tuple(p) for p in meta["prompts"][task]]
            ids, mask, rows = tokenize_captions(tokenizer, {"": per_class}, device)
            emb = F.normalize(text_embeddings(clip, ids, mask).float(), dim=-1)
            out[task] = torch.stack([F.normalize(emb[list(r)].mean(0), dim=-1) for r in rows[""]])
    return out


FINETUNING_ONLY = ("finetune_steps", "finetune_steps_by_task", "finetune_batch", "finetune_lr",
                   "finetune_decay_to_base", "finetune_anchor", "finetune_anchor_by_task", "lora_rank", "lora_alpha",
                   "lora_lr")


def pretraining_key(settings: ZooSettings, device: str) -> str:
    """Identifies a pretraining: every setting but the fine-tuning ones, and the kind of device (CPU and CUDA
    kernels round differently)."""
    import hashlib

    fields = {k: v for k, v in asdict(settings).items() if k not in FINETUNING_ONLY}
    blob = json.dumps([fields, device.split(":")[0]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_one(cache: Path, settings: ZooSettings, name: str, out: Path, device: str = "cpu",
            log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    from ..model import new_clip
    from ..training import anchor_pool, finetune, pretrain, tokenize_captions

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    meta, arrays = load_cache(cache, device)
    check_compatible(meta, settings)
    tokenizer = _tokenizer(meta, settings)
    clip = new_clip(settings, tokenizer, len(tokenizer)).to(device)
    vision_params = sum(p.numel() for p in clip.vision_model.parameters())
    total_params = sum(p.numel() for p in clip.parameters())
    result: dict[str, Any] = {
        "name": name, "settings": asdict(settings), "device": device, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"), "vision_parameters": vision_params, "clip_parameters": total_params,
        # what the zoo would ship at float16: the pretrained CLIP and one vision tower per task
        "float16_mb": round(2 * (total_params + len(settings.tasks) * vision_params) / 1e6, 1),
        "seconds": {},
    }

    def save(stage: str) -> None:
        result["seconds"][stage] = round(time.perf_counter() - started, 1)
        temp = out.with_suffix(f".tmp{os.getpid()}")
        temp.write_text(json.dumps(result, indent=1) + "\n")
        temp.replace(out)
        log(f"{name}: {stage} done at {result['seconds'][stage]} s")

    corpus, captions = corpus_of(meta, arrays, settings)
    saved = cache / f"pretrained-{pretraining_key(settings, device)}.pt"
    if saved.exists():  # the same pretraining on the same kind of device: reuse it
        state = torch.load(saved, map_location=device)
        clip.load_state_dict(state["model"])
        result["pretrain_losses"], result["pretrained_from"] = state["losses"], saved.name
    else:
        token_ids, attention_mask, rows = tokenize_captions(tokenizer, captions, device)
        result["pretrain_losses"] = pretrain(clip, corpus, rows, token_ids, attention_mask, settings, rng, log)
        temp = saved.with_suffix(f".tmp{os.getpid()}")
        torch.save({"model": clip.state_dict(), "losses": result["pretrain_losses"]}, temp)
        temp.replace(saved)
    for p in clip.parameters():
        p.requires_grad_(False)
    task_heads = heads(clip, tokenizer, meta, settings.tasks)
    tests = {t: (arrays[f"task/{t}/test/images"], arrays[f"task/{t}/test/labels"]) for t in settings.tasks}
    base = {n: p.detach().clone() for n, p in clip.vision_model.named_parameters()}
    bench = measure.Bench(clip, task_heads, tests, base, {})
    result["test_sizes"] = {t: len(tests[t][1]) for t in settings.tasks}
    result["chance"] = {t: round(100 / len(meta["prompts"][t]), 2) for t in settings.tasks}
    result["pretrained"] = bench.row(base)
    save("pretrain")

    finetuned = {}
    vectors = {n: torch.empty((len(settings.tasks), *p.shape), device=device) for n, p in base.items()}
    for i, task in enumerate(settings.tasks):
        train = [arrays[f"task/{task}/{part}/images"] for part in ("train", "extra")]
        labels = [arrays[f"task/{task}/{part}/labels"] for part in ("train", "extra")]
        vision = finetune(clip, task_heads[task], torch.cat(train), torch.cat(labels), settings, task, log,
                          anchor_pool(corpus, task) if settings.anchor_for(task) else None)
        for n, p in vision.named_parameters():
            vectors[n][i] = p.detach() - base[n]
        finetuned[task] = bench.accuracy(dict(vision.named_parameters()), task)
        del vision
    bench.vectors = vectors
    result["finetuned"] = finetuned
    result["vector_norms"] = measure.vector_norms(bench)
    save("finetune")
    result["task_arithmetic"] = measure.task_arithmetic(bench)
    save("task_arithmetic")
    result["ties"] = measure.ties(bench)
    save("ties")
    result["single_curves"] = measure.single_curves(bench)
    result["cross"] = measure.cross_matrix(bench, result["pretrained"])
    save("single")
    result["adamerging_layer_wise"], result["adamerging_losses"] = measure.adamerging_layer_wise(bench, settings.seed)
    save("adamerging")
    return result
