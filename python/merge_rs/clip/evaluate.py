"""Zero-shot evaluation of CLIP vision encoders on image-classification tasks, with FusionBench's report shape.

The evaluated encoder replaces the pretrained CLIP's vision tower: image embeddings are the pretrained
``visual_projection`` of its pooled output, L2-normalised; logits are ``exp(logit_scale)`` times their cosine with
the task's zero-shot head. Per task the report has top-1 ``accuracy`` and ``loss``, the mean over batches of each
batch's mean cross-entropy (FusionBench's ``MeanMetric`` of ``F.cross_entropy``); ``average`` is the unweighted mean
over tasks; ``model_info`` counts the encoder's parameters.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import distributed
from .data import LabeledImages, load_split
from .heads import cached_head, model_fingerprint
from .pool import ModelPool
from .tasks import Task, classnames_from_labels, get_task

GENERIC_TEMPLATES = ("a photo of a {}.", "a photo of the {}.")


@dataclass
class TaskData:
    """A task with the split it is evaluated on."""

    task: Task
    data: LabeledImages


def parse_task_option(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=DATASET`` (a hub id or local path)."""
    name, _, source = text.partition("=")
    if not name:
        raise ValueError(f"--task '{text}': expected NAME or NAME=DATASET")
    return name, source or None


def prepare_tasks(requests: Iterable[tuple[str, str | None]], pool: ModelPool | None = None, split: str = "test",
                  limit: int | None = None) -> list[TaskData]:
    """Load each task's split. A task merge-rs does not know needs a dataset whose labels carry class names; it
    gets generic templates."""
    prepared = []
    for name, source in requests:
        try:
            task = get_task(name)
        except ValueError:
            if source is None:
                raise
            task = Task(name, GENERIC_TEMPLATES)
        if source is None:
            source = pool.dataset_source(task.name) if pool is not None else task.dataset
        if source is None:
            raise ValueError(f"task '{name}' has no default dataset; give one as --task {name}=PATH")
        try:
            data = load_split(source, split).head(limit)
        except ValueError as e:
            raise ValueError(f"task '{name}': {e}") from None
        prepared.append(TaskData(_with_classnames(task, data, source), data))
    return prepared


def _with_classnames(task: Task, data: LabeledImages, source: str) -> Task:
    if not task.classnames:
        if not data.label_names:
            raise ValueError(f"task '{task.name}': dataset '{source}' has no class names in its labels; "
                             "merge-rs needs them for the prompts")
        return task.with_classnames(classnames_from_labels(data.label_names))
    if data.label_names is not None and len(data.label_names) != len(task.classnames):
        raise ValueError(f"task '{task.name}' has {len(task.classnames)} classes but dataset '{source}' has "
                         f"{len(data.label_names)}")
    return task


def pick_device(device: str = "auto") -> str:
    """The one place a device is chosen: ``auto`` is CUDA when available (this rank's GPU under a launcher),
    else the CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``meta`` are taken as given."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return f"cuda:{distributed.local_rank()}" if distributed.active() else "cuda"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return device


class Evaluator:
    """Holds the pretrained CLIP's projection, the zero-shot heads and the data loaders, and evaluates any number
    of vision encoders against them."""

    def __init__(self, clip_path: Path, tasks: list[TaskData], *, device: str = "auto", batch_size: int = 128,
                 workers: int = 0, cache_pixels: bool = False, progress: bool = True, head_cache: bool = True,
                 shard: bool = True):
        from .models import load_clip

        self.device = pick_device(device)
        self.tasks = tasks
        # Under a launcher, whether this evaluator shares each evaluation with the other ranks (or, as when a
        # sweep spreads its points, evaluates whole models alone).
        self.shard = shard
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress and sys.stderr.isatty()
        self._pixel_cache: dict[str, list[tuple[Any, Any]]] | None = {} if cache_pixels else None
        # Per example, whether the last encoder evaluated got it right (one process only): for bootstraps.
        self.correct: dict[str, list[bool]] = {}
        clip, processor = load_clip(Path(clip_path))
        fingerprint = model_fingerprint(Path(clip_path))
        self.heads = {t.task.name: cached_head(clip, processor.tokenizer, t.task, fingerprint, head_cache).to(self.device)
                      for t in tasks}
        self.projection = clip.visual_projection.to(self.device).eval()
        self.logit_scale = float(clip.logit_scale.detach().exp())
        self.image_processor = processor.image_processor

    def evaluate(self, vision: Any, name: str | None = None) -> dict[str, Any]:
        """FusionBench's report for one encoder: ``model_info``, one ``{accuracy, loss}`` per task, ``average``."""
        report: dict[str, Any] = {"model_info": model_info(vision)}
        if name is not None:
            report["model_info"]["name"] = name
        vision = vision.to(self.device).eval()
        for item in self.tasks:
            report[item.task.name] = self._evaluate_task(vision, item, name)
        scores = [v for k, v in report.items() if k != "model_info"]
        report["average"] = {
            "accuracy": sum(s["accuracy"] for s in scores) / len(scores),
            "loss": sum(s["loss"] for s in scores) / len(scores),
        } if scores else {}
        return report

    def evaluate_task(self, vision: Any, task: str, name: str | None = None) -> dict[str, float]:
        """``{accuracy, loss}`` of one encoder on one of the evaluator's tasks."""
        item = next(t for t in self.tasks if t.task.name == task)
        return self._evaluate_task(vision.to(self.device).eval(), item, name)

    def logits(self, vision: Any, pixel_values: Any, task: str) -> Any:
        import torch.nn.functional as F

        pooled = vision(pixel_values=pixel_values).pooler_output
        embeds = F.normalize(self.projection(pooled).float(), dim=-1)
        return self.logit_scale * embeds @ self.heads[task].T

    def _evaluate_task(self, vision: Any, item: TaskData, name: str | None) -> dict[str, float]:
        import torch
        import torch.nn.functional as F
        from tqdm import tqdm

        correct, seen, loss_sum, batches_seen = 0, 0, 0.0, 0
        hits: list[bool] = []
        label = f"{name}: {item.task.name}" if name else item.task.name
        batches = tqdm(self._batches(item), desc=label, total=self._batch_count(item), leave=False,
                       disable=not self.progress, file=sys.stderr)
        with torch.inference_mode(), self._autocast():
            for pixels, targets in batches:
                pixels, targets = pixels.to(self.device, non_blocking=True), targets.to(self.device)
                logits = self.logits(vision, pixels, item.task.name)
                loss_sum += F.cross_entropy(logits, targets).item()
                batches_seen += 1
                right = logits.argmax(dim=-1) == targets
                hits.extend(right.tolist())
                correct += int(right.sum())
                seen += len(targets)
        counts = [correct, seen, loss_sum, batches_seen]
        if self._world() == 1:
            self.correct[item.task.name] = hits
        else:
            counts = distributed.sum_across(counts, self.device)
        total_correct, total_seen, total_loss, total_batches = counts
        if total_seen == 0:
            raise ValueError(f"task '{item.task.name}': the dataset split is empty")
        return {"accuracy": total_correct / total_seen, "loss": total_loss / total_batches}

    def _autocast(self):
        import contextlib

        import torch

        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _batch_count(self, item: TaskData) -> int:
        return len(self._batch_starts(item))

    def _batch_starts(self, item: TaskData) -> list[int]:
        """This rank's batches (every ``world``-th, so that the union over ranks is the single-process set)."""
        starts = range(0, len(item.data), self.batch_size)
        rank = distributed.rank() if self.shard else 0
        return list(starts[rank::self._world()])

    def _world(self) -> int:
        return distributed.world() if self.shard else 1

    def _batches(self, item: TaskData) -> Iterator[tuple[Any, Any]]:
        if self._pixel_cache is not None and item.task.name in self._pixel_cache:
            yield from self._pixel_cache[item.task.name]
            return
        kept = []
        for batch in self._loader(item):
            if self._pixel_cache is not None:
                kept.append(batch)
            yield batch
        if self._pixel_cache is not None:
            self._pixel_cache[item.task.name] = kept

    def _loader(self, item: TaskData):
        from torch.utils.data import DataLoader

        from torch.utils.data import Subset

        dataset = item.data.dataset
        if self._world() > 1:
            n = len(dataset)
            mine = [i for s in self._batch_starts(item) for i in range(s, min(s + self.batch_size, n))]
            dataset = Subset(dataset, mine)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                          collate_fn=Collate(self.image_processor, item.data.image_column, item.data.label_column),
                          pin_memory=self.device.startswith("cuda"))


class Collate:
    """Turns dataset rows into (pixel_values, labels) with the CLIP image processor (picklable for workers)."""

    def __init__(self, image_processor: Any, image_column: str, label_column: str):
        self.image_processor = image_processor
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, rows: list[dict[str, Any]]) -> tuple[Any, Any]:
        import torch

        images = [_rgb(row[self.image_column]) for row in rows]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels, torch.tensor([int(row[self.label_column]) for row in rows])


def _rgb(image: Any) -> Any:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ValueError(f"expected an image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def model_info(model: Any) -> dict[str, Any]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "all_params": total,
            "trainable_percentage": trainable / total if total else 0.0}


def format_table(rows: dict[str, dict[str, Any]], tasks: list[str], metrics: dict[str, str] | None = None) -> str:
    """Rows = models or methods, columns = tasks + average (FusionBench's tables). Accuracy in percent unless
    ``metrics`` names another metric for a row (e.g. ``{"loss": "loss"}``)."""
    header = ["", *tasks, "average"]
    body = []
    for name, report in rows.items():
        metric = (metrics or {}).get(name, "accuracy")
        cells = [report.get(t, {}).get(metric) for t in [*tasks, "average"]]
        body.append([name, *("—" if v is None else f"{100 * v:.1f}" if metric == "accuracy" else f"{v:.3f}"
                             for v in cells)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])
