"""A quick look at one task: how far a built zoo's pretrained model fine-tunes on it, class by class.

``probe`` fine-tunes the pretrained CLIP of a built zoo (``merge_rs/zoo/data`` or a ``tools.zoo.build`` output) on
one task's whole source, split 3:1 at random (at most ``test_size`` test images), with the zoo's fine-tuning
recipe but no anchor, and reports the pretrained and fine-tuned accuracy, overall and per class. A probe takes
half a minute per 900 steps on 2 cores, against 20 minutes or more for a harness run, so it is the way to ask
whether a task can reach a target at all (too few steps? classes that cannot be told apart?) before paying for a
run. Its numbers are not a zoo's: the split differs and nothing keeps θ₀'s embeddings.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..settings import ZooSettings


def load_pretrained(zoo: Path) -> tuple[Any, Any]:
    """The zoo's pretrained ``CLIPModel`` in float32 (it ships in float16, which CPUs train badly) and tokenizer."""
    from transformers import CLIPModel, CLIPTokenizerFast

    manifest = json.loads((zoo / "zoo.json").read_text())
    path = zoo / manifest["pretrained"]
    return CLIPModel.from_pretrained(path).float().eval(), CLIPTokenizerFast.from_pretrained(path)


def head(clip: Any, tokenizer: Any, classnames: Sequence[str], templates: Sequence[str]) -> Any:
    """Per class, the normalised mean of its prompts' normalised text embeddings."""
    import torch
    import torch.nn.functional as F

    from ..training import text_embeddings

    rows = []
    with torch.no_grad():
        for name in classnames:
            tokens = tokenizer([t.format(name) for t in templates], padding=True, return_tensors="pt")
            embedded = F.normalize(text_embeddings(clip, tokens["input_ids"], tokens["attention_mask"]), dim=-1)
            rows.append(F.normalize(embedded.mean(0), dim=-1))
    return torch.stack(rows)


def _predict(clip: Any, vision: Any, classes: Any, images: Any) -> Any:
    import torch
    import torch.nn.functional as F

    from ..training import as_pixels, image_embeddings

    with torch.no_grad():
        return (F.normalize(image_embeddings(clip, vision, as_pixels(images)), dim=-1) @ classes.T).argmax(-1)


def probe(clip: Any, tokenizer: Any, images: Any, labels: Sequence[int], classnames: Sequence[str],
          templates: Sequence[str], settings: ZooSettings, test_size: int = 1000, log: Any = print,
          groups: Sequence[str] | None = None) -> dict[str, Any]:
    """Fine-tune ``clip``'s vision tower on ``images`` (uint8 ``[N, 3, H, W]``) with ``settings``' recipe and no
    anchor; the pretrained and fine-tuned test accuracy (%), overall and per class name. Test takes whole
    ``groups`` (the source's, when it groups its images) until it holds a quarter of the images or ``test_size``."""
    import torch

    from ..splits import shuffled_groups
    from ..training import finetune

    share = min(test_size, len(labels) // 4)
    test: list[int] = []
    train: list[int] = []
    for members in shuffled_groups(len(labels), random.Random(settings.seed), groups):
        (test if len(test) < share else train).extend(members)
    test_count = len(test)
    y = torch.tensor(list(labels))
    classes = head(clip, tokenizer, classnames, templates)
    started = time.perf_counter()
    tuned = finetune(clip, classes, images[train], y[train], settings, "probe", log, anchor=None)
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {"classes": len(classnames), "images": len(labels), "test": test_count,
                           "finetune_seconds": round(seconds, 1)}
    for stage, vision in (("pretrained", clip.vision_model), ("fine_tuned", tuned)):
        right = _predict(clip, vision, classes, images[test]).eq(y[test])
        out[stage] = round(right.float().mean().item() * 100, 1)
        out[f"{stage}_per_class"] = {name: round(right[y[test] == c].float().mean().item() * 100, 1)
                                     for c, name in enumerate(classnames) if (y[test] == c).any()}
    return out


def probe_task(zoo: Path, task: str, settings: ZooSettings, out: Path, test_size: int = 1000) -> dict[str, Any]:
    """:func:`probe` on registered ``task``'s whole source, drawn at ``settings.image_size``; written to ``out``."""
    import numpy as np
    import torch

    from merge_rs.clip.tasks import get_task

    from ..resolution import drawn_at
    from ..sources import SOURCES

    with drawn_at(settings.image_size):
        pictures, labels, *grouped = SOURCES[task]()
    side = settings.image_size
    images = torch.stack([torch.from_numpy(np.asarray(p.convert("RGB").resize((side, side)))).permute(2, 0, 1)
                          for p in pictures])
    clip, tokenizer = load_pretrained(zoo)
    definition = get_task(task)
    result = {"task": task, "zoo": str(zoo), "settings": asdict(settings),
              **probe(clip, tokenizer, images, labels, definition.classnames, definition.templates, settings,
                      test_size, groups=grouped[0] if grouped else None)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{task}: pretrained {result['pretrained']} %, fine-tuned {result['fine_tuned']} % "
          f"({settings.finetune_steps} steps, {result['finetune_seconds']} s)")
    return result
