"""``merge-rs demo``: merge the offline zoo's fine-tuned models with every method and evaluate everything on every
task, printing FusionBench's table: fine-tuned models (each on its own task) on top, merges in between, the
pretrained model at the bottom."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..api import merge
from ..learned.method import RunContext
from ..learned.registry import LEARNED
from ..methods import METHODS
from .evaluate import Evaluator, format_table, prepare_tasks
from .pool import ModelPool, get_pool

# Every data-free method of the engine's table, with its defaults (FusionBench's; DARE's seed is 0).
DEMO_MERGES: list[str] = [name for name, method in METHODS.items() if method.data_free]
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
             learned: bool = True, adamerging_steps: int | None = None, progress: bool = True,
             log: Callable[[str], None] = lambda _: None) -> DemoResult:
    """Merge ``pool`` with every method in ``DEMO_MERGES`` (and, with ``learned``, every learned method's demo
    rows) and evaluate pretrained, fine-tuned and merged models."""
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
        for method in DEMO_MERGES:
            out = Path(temp) / method
            report = merge(method, pool.model_paths(), out, threads=threads,
                           pretrained=pool.pretrained_path() if METHODS[method].needs_pretrained else None)
            merge_seconds[method] = report.seconds
            log(f"merged with {method} in {report.seconds:.2f} s; evaluating")
            rows[method] = evaluator.evaluate(load_vision_encoder(out), name=method)
        context = RunContext(device=device, threads=threads, progress=False)
        for row, (method, options) in (learned_rows(adamerging_steps).items() if learned else ()):
            out = Path(temp) / row
            seconds = method(pool, out, context, **options).seconds
            merge_seconds[row] = seconds
            log(f"{row} took {seconds:.1f} s; evaluating")
            rows[row] = evaluator.evaluate(load_vision_encoder(out), name=row)
    log("evaluating the pretrained model")
    rows[PRETRAINED] = evaluator.evaluate(load_vision_encoder(pool.pretrained_path()), name=PRETRAINED)
    return DemoResult(names, rows, fine_tuned, merge_seconds, time.perf_counter() - started)


def learned_rows(steps: int | None = None) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Each learned method's demo rows: row name → (method, options); ``steps`` overrides the learning steps
    of the methods that have a ``steps`` option."""
    rows = {}
    for method in LEARNED.values():
        override = {"steps": steps} if steps is not None and "steps" in method.defaults() else {}
        for row, options in method.demo_rows.items():
            rows[row] = (method, {**options, **override})
    return rows


def _individual(fine_tuned: dict[str, dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    """Each task's score from its own fine-tuned model (FusionBench's 'individual' row)."""
    row: dict[str, Any] = {t: fine_tuned[t][t] for t in tasks}
    row["average"] = {k: sum(row[t][k] for t in tasks) / len(tasks) for k in ("accuracy", "loss")}
    return row
