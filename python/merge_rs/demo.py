"""``merge-rs demo``: build a small example model set once, merge it with every method, and show what each
merge keeps of every task (cosine similarity between the merged task vector and each task's own)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from .api import cosine_similarity, merge
from .methods import METHODS
from .synthetic import make_model_set

DEMO_RUNS: dict[str, dict[str, object]] = {
    "simple_average": {},
    "task_arithmetic": {},
    "ties": {},
    "dare": {"seed": 0},
    "dare_ties": {"seed": 0},
}


@dataclass(frozen=True)
class DemoRow:
    """One method's result."""

    method: str
    seconds: float
    parameters: int
    alignment: list[float]


def run_demo(workdir: Path | None = None, preset: str = "small", models: int = 4, threads: int = 0) -> list[DemoRow]:
    """Merge an example set with each method; returns one row per method. Without ``workdir`` everything is
    built in a temporary directory that is removed afterwards."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="merge-rs-demo-") as temp:
            return _run_in(Path(temp), preset, models, threads)
    return _run_in(Path(workdir), preset, models, threads)


def _run_in(root: Path, preset: str, models: int, threads: int) -> list[DemoRow]:
    pretrained, finetuned = make_model_set(root / "models", preset, models, seed=0, threads=threads)
    rows = []
    for method, params in DEMO_RUNS.items():
        out = root / "merged" / method
        spec = METHODS[method]
        report = merge(
            method,
            finetuned,
            out,
            pretrained=pretrained if spec.needs_pretrained else None,
            overwrite=True,
            threads=threads,
            **params,
        )
        cos = cosine_similarity(pretrained, [out, *finetuned], threads=threads)
        rows.append(DemoRow(method, report.seconds, report.parameters_merged, cos.matrix[0][1:]))
    return rows


def format_table(rows: list[DemoRow]) -> str:
    """Rows = methods, columns = cos(merged τ, τᵢ) per task and their mean."""
    tasks = len(rows[0].alignment) if rows else 0
    header = ["method", *(f"task {i + 1}" for i in range(tasks)), "mean", "seconds"]
    body = [
        [r.method, *(f"{a:.3f}" for a in r.alignment), f"{sum(r.alignment) / max(tasks, 1):.3f}", f"{r.seconds:.2f}"]
        for r in rows
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])
