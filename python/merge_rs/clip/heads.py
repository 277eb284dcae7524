"""Zero-shot classification heads from a CLIP text tower, cached on disk.

For each class: embed every prompt template filled with the class name, L2-normalise each embedding, average, and
normalise again. Logits are ``exp(logit_scale) · cos(image embedding, class embedding)``. A head depends only on the
pretrained CLIP and the task's class names and templates, so it is cached under ``$MERGE_RS_CACHE`` (default
``~/.cache/merge-rs``) keyed by a fingerprint of both.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .tasks import Task

if TYPE_CHECKING:
    import torch


def cache_dir() -> Path:
    return Path(os.environ.get("MERGE_RS_CACHE") or Path.home() / ".cache" / "merge-rs")


def compute_head(clip, tokenizer, task: Task) -> "torch.Tensor":
    """The (classes × projection_dim) head, rows unit-norm, computed with ``clip``'s text tower."""
    import torch
    import torch.nn.functional as F

    device = clip.text_projection.weight.device
    rows = []
    with torch.no_grad():
        for classname in task.classnames:
            tokens = tokenizer(task.prompts(classname), padding=True, truncation=True, return_tensors="pt").to(device)
            pooled = clip.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
            embeds = F.normalize(clip.text_projection(pooled.pooler_output).float(), dim=-1)
            rows.append(F.normalize(embeds.mean(dim=0), dim=-1))
    return torch.stack(rows)


def model_fingerprint(path: Path) -> str:
    """Identifies a local checkpoint by its files' names, sizes and modification times."""
    parts = []
    for f in sorted(Path(path).iterdir()) if Path(path).is_dir() else [Path(path)]:
        if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return f"{Path(path).resolve()}|" + "|".join(parts)


def head_key(fingerprint: str, task: Task) -> str:
    blob = json.dumps([fingerprint, task.name, list(task.classnames), list(task.templates)])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def cached_head(clip, tokenizer, task: Task, fingerprint: str | None, use_cache: bool = True) -> "torch.Tensor":
    """``compute_head`` through the on-disk cache (skipped when ``fingerprint`` is None or caching is off)."""
    if fingerprint is None or not use_cache:
        return compute_head(clip, tokenizer, task)
    from safetensors.torch import load_file, save_file

    path = cache_dir() / "heads" / f"{task.name}-{head_key(fingerprint, task)}.safetensors"
    if path.exists():
        try:
            return load_file(path)["head"]
        except Exception:  # a damaged cache entry is recomputed
            path.unlink(missing_ok=True)
    head = compute_head(clip, tokenizer, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"head": head.cpu().contiguous()}, temp, metadata={"task": task.name})
    temp.replace(path)
    return head
