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
from .statistics import bootstrap_interval, normalized_accuracy

# Every data-free method of the engine's table that merges any number of models, with its defaults (FusionBench's;
# DARE's seed is 0): passthrough takes one model, so it has no demo row.
DEMO_MERGES: list[str] = [name for name, method in METHODS.items() if method.data_free and method.max_models is None]
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
    test_sizes: dict[str, int] = field(default_factory=dict)
    lora: "DemoResult | None" = None  # the same merges of the pool's LoRA twin (the zoo's adapters)

    def normalized(self, row: str) -> float:
        """The row's normalised accuracy (merged over fine-tuned, per task, averaged)."""
        return normalized_accuracy(self.rows[row], self.rows[FINE_TUNED], self.tasks)

    def table(self) -> str:
        """FusionBench's table, with each average's 95 % bootstrap interval and the normalised accuracy."""
        lines = format_table(self.rows, self.tasks).splitlines()
        extra = [("95% interval", "normalized"), ("-" * 12, "-" * 10)]
        for row in self.rows:
            ci = self.rows[row]["average"].get("accuracy_ci95")
            shown = f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}" if ci else "—"
            extra.append((shown, f"{100 * self.normalized(row):.1f}"))
        return "\n".join(f"{line}  {a:>12}  {b:>10}" for line, (a, b) in zip(lines, extra))

    def transfer_table(self) -> str:
        return format_table(self.fine_tuned, self.tasks)

    def to_dict(self) -> dict[str, Any]:
        out = {"tasks": self.tasks, "test_sizes": self.test_sizes, "rows": self.rows, "fine_tuned": self.fine_tuned,
               "normalized_accuracy": {row: self.normalized(row) for row in self.rows},
               "merge_seconds": self.merge_seconds, "seconds": self.seconds}
        if self.lora is not None:
            out["lora"] = self.lora.to_dict()
        return out


def run_demo(pool: ModelPool | str = "zoo", *, limit: int | None = None, device: str = "auto", threads: int = 0,
             learned: bool = True, adamerging_steps: int | None = None, lora: bool = True, progress: bool = True,
             log: Callable[[str], None] = lambda _: None) -> DemoResult:
    """Merge ``pool`` with every method in ``DEMO_MERGES`` (and, with ``learned``, every learned method's demo
    rows) and evaluate pretrained, fine-tuned and merged models; with ``lora``, the same merges of the pool's LoRA
    twin (the zoo's adapters) too."""
    from .models import load_vision_encoder
    from .pool import lora_twin

    started = time.perf_counter()
    pool = get_pool(pool) if isinstance(pool, str) else pool
    tasks = prepare_tasks(((t, None) for t in pool.tasks), pool, limit=limit)
    evaluator = Evaluator(pool.pretrained_path(), tasks, device=device, cache_pixels=True, progress=progress)
    names = [t.task.name for t in tasks]
    sizes = {t.task.name: len(t.data) for t in tasks}

    def evaluate(vision: Any, name: str) -> dict[str, Any]:
        report = evaluator.evaluate(vision, name=name)
        return _scored(report, dict(evaluator.correct))

    with tempfile.TemporaryDirectory(prefix="merge-rs-demo-") as temp:
        rows, fine_tuned = _individual_rows(pool, evaluator, names, log)
        merge_seconds = _merged_rows(pool, Path(temp), threads, evaluate, rows, log)
        context = RunContext(device=device, threads=threads, progress=False)
        for row, (method, options) in (learned_rows(adamerging_steps).items() if learned else ()):
            out = Path(temp) / row
            seconds = method(pool, out, context, **options).seconds
            merge_seconds[row] = seconds
            log(f"{row} took {seconds:.1f} s; evaluating")
            rows[row] = evaluate(load_vision_encoder(out), row)
        log("evaluating the pretrained model")
        rows[PRETRAINED] = evaluate(load_vision_encoder(pool.pretrained_path()), PRETRAINED)
        twin = lora_twin(pool) if lora else None
        adapters = None
        if twin is not None:
            log("the same merges of the zoo's LoRA adapters")
            lora_rows, lora_tuned = _individual_rows(twin, evaluator, names, log)
            lora_seconds = _merged_rows(twin, Path(temp) / "lora", threads, evaluate, lora_rows, log)
            lora_rows[PRETRAINED] = rows[PRETRAINED]
            adapters = DemoResult(names, lora_rows, lora_tuned, lora_seconds, 0.0, sizes)
    return DemoResult(names, rows, fine_tuned, merge_seconds, time.perf_counter() - started, sizes, adapters)


def _scored(report: dict[str, Any], correct: dict[str, list[bool]]) -> dict[str, Any]:
    report["average"]["accuracy_ci95"] = list(bootstrap_interval(correct))
    return report


def _individual_rows(pool: ModelPool, evaluator: Evaluator, names: list[str], log: Callable[[str], None]
                     ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The fine-tuned row (each model on its own task) and each model's report on every task."""
    fine_tuned, own_correct = {}, {}
    for task in pool.tasks:
        log(f"evaluating the {task} model")
        fine_tuned[task] = evaluator.evaluate(pool.load_vision(task), name=task)
        own_correct[task] = evaluator.correct[task]
    return {FINE_TUNED: _scored(_individual(fine_tuned, names), own_correct)}, fine_tuned


def _merged_rows(pool: ModelPool, temp: Path, threads: int, evaluate: Callable[[Any, str], dict[str, Any]],
                 rows: dict[str, Any], log: Callable[[str], None]) -> dict[str, float]:
    """Each method of ``DEMO_MERGES`` merged and evaluated into ``rows``; its merge time."""
    from .models import load_vision_encoder

    seconds = {}
    for method in DEMO_MERGES:
        out = temp / method
        report = merge(method, pool.model_paths(), out, threads=threads,
                       pretrained=pool.base_for(METHODS[method].needs_pretrained))
        seconds[method] = report.seconds
        log(f"merged {pool.name} with {method} in {report.seconds:.2f} s; evaluating")
        rows[method] = evaluate(load_vision_encoder(out), method)
    return seconds


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
