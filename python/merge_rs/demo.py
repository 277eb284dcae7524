"""``merge-rs demo``: merge the offline zoo's fine-tuned models with every method and evaluate everything on every
task, printing FusionBench's table: fine-tuned models (each on its own task) on top, merges in between, the
pretrained model at the bottom."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .api import merge
from .evaluate import Evaluator, format_table, prepare_tasks
from .methods import METHODS
from .pool import ModelPool, get_pool

# Method → parameters (FusionBench's defaults, DARE with a fixed seed).
DEMO_MERGES: dict[str, dict[str, Any]] = {
    "simple_average": {},
    "task_arithmetic": {"scaling_factor": 0.3},
    "ties": {"scaling_factor": 0.3, "threshold": 20},
    "dare": {"scaling_factor": 0.3, "drop_rate": 0.5, "seed": 0},
    "dare_ties": {"scaling_factor": 0.3, "threshold": 20, "drop_rate": 0.5, "seed": 0},
}
# The learned methods (torch); AdaMerging runs fewer steps than its default 1000 to keep the demo short.
DEMO_ADAMERGING_STEPS = 200
LEARNED = ("adamerging_task_wise", "adamerging_layer_wise", "fisher_merging", "regmean")
FINE_TUNED = "fine-tuned (individual)"
PRETRAINED = "pretrained"


@dataclass
class DemoResult:
    """Reports by row name, each fine-tuned model's report on every task, and the timings."""

    tasks: list[str]
    rows: dict[str, dict[str, Any]]
    fine_tuned: dict[str, dict[str, Any]]
    merge_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        return format_table(self.rows, self.tasks)

    def transfer_table(self) -> str:
        return format_table(self.fine_tuned, self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "rows": self.rows, "fine_tuned": self.fine_tuned,
                "merge_seconds": self.merge_seconds, "seconds": self.seconds}


def run_demo(pool: ModelPool | str = "zoo", *, limit: int | None = None, device: str = "auto", threads: int = 0,
             learned: bool = True, adamerging_steps: int = DEMO_ADAMERGING_STEPS, progress: bool = True,
             log: Callable[[str], None] = lambda _: None) -> DemoResult:
    """Merge ``pool`` with every method in ``DEMO_MERGES`` (and, with ``learned``, AdaMerging, Fisher merging and
    RegMean) and evaluate pretrained, fine-tuned and merged models."""
    from .models import load_vision_encoder

    started = time.perf_counter()
    pool = get_pool(pool) if isinstance(pool, str) else pool
    tasks = prepare_tasks(((t, None) for t in pool.tasks), pool, limit=limit)
    evaluator = Evaluator(pool.pretrained_path(), tasks, device=device, cache_pixels=True, progress=progress)
    names = [t.task.name for t in tasks]

    fine_tuned = {}
    for task in pool.tasks:
        log(f"evaluating the {task} model")
        fine_tuned[task] = evaluator.evaluate(pool.load_vision(task), name=task)
    rows = {FINE_TUNED: _individual(fine_tuned, names)}

    merge_seconds = {}
    with tempfile.TemporaryDirectory(prefix="merge-rs-demo-") as temp:
        for method, params in DEMO_MERGES.items():
            out = Path(temp) / method
            report = merge(method, pool.model_paths(), out, threads=threads,
                           pretrained=pool.pretrained_path() if METHODS[method].needs_pretrained else None, **params)
            merge_seconds[method] = report.seconds
            log(f"merged with {method} in {report.seconds:.2f} s; evaluating")
            rows[method] = evaluator.evaluate(load_vision_encoder(out), name=method)
        if learned:
            for method in LEARNED:
                out = Path(temp) / method
                seconds = _learned_merge(method, pool, out, device, threads, adamerging_steps, log)
                merge_seconds[method] = seconds
                log(f"{method} took {seconds:.1f} s; evaluating")
                rows[method] = evaluator.evaluate(load_vision_encoder(out), name=method)
    log("evaluating the pretrained model")
    rows[PRETRAINED] = evaluator.evaluate(load_vision_encoder(pool.pretrained_path()), name=PRETRAINED)
    return DemoResult(names, rows, fine_tuned, merge_seconds, time.perf_counter() - started)


def _learned_merge(method: str, pool: ModelPool, out: Path, device: str, threads: int, steps: int,
                   log: Callable[[str], None]) -> float:
    from .learned.adamerging import adamerging
    from .learned.fisher import fisher_merging
    from .learned.regmean import regmean

    if method.startswith("adamerging"):
        mode = "task" if method == "adamerging_task_wise" else "layer"
        result = adamerging(pool, out, mode=mode, steps=steps, device=device, threads=threads, progress=False)
    elif method == "fisher_merging":
        result = fisher_merging(pool, out, device=device, threads=threads)
    else:
        result = regmean(pool, out, device=device)
    return result.seconds


def _individual(fine_tuned: dict[str, dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    """Each task's score from its own fine-tuned model (FusionBench's 'individual' row)."""
    row: dict[str, Any] = {t: fine_tuned[t][t] for t in tasks}
    row["average"] = {k: sum(row[t][k] for t in tasks) / len(tasks) for k in ("accuracy", "loss")}
    return row
