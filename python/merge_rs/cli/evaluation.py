"""What the commands that evaluate share: the evaluation options, running an evaluation (torch is imported
only here, when it runs), and saving or printing FusionBench's report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from .app import OUTPUT_PATH, main_process, run

T = TypeVar("T")

EVAL_OPTIONS: list[Callable[[Any], Any]] = [
    click.option("--task", "tasks", multiple=True, metavar="NAME[=DATASET]",
                 help="Task to evaluate on, repeatable; DATASET is a hub id or local path (default: the pool's or "
                      "the task's own). Default: every task of --pool."),
    click.option("--split", default="test", show_default=True, help="Dataset split to evaluate on."),
    click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N examples of each task."),
    click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:N."),
    click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                 help="DataLoader worker processes for image preprocessing."),
    click.option("--report", "report_path", type=OUTPUT_PATH, help="Write the report as JSON."),
]


@dataclass(frozen=True)
class EvalSettings:
    """The evaluation options of one command."""

    tasks: tuple[str, ...]
    split: str
    limit: int | None
    batch_size: int
    device: str
    workers: int
    report_path: Path | None

    @classmethod
    def pop(cls, options: dict[str, Any]) -> EvalSettings:
        """Take the evaluation options out of a command's keyword arguments."""
        return cls(tasks=options.pop("tasks"), split=options.pop("split"), limit=options.pop("limit"),
                   batch_size=options.pop("batch_size"), device=options.pop("device"),
                   workers=options.pop("workers"), report_path=options.pop("report_path"))


def evaluate(model: Path, clip: Path, pool: Any, settings: EvalSettings, *, quiet: bool,
             name: str | None = None) -> dict[str, Any]:
    """Zero-shot evaluation of the vision encoder ``model`` with ``clip``'s text heads; FusionBench's report."""
    from ..clip import distributed
    from ..clip.evaluate import Evaluator, prepare_tasks
    from ..clip.models import load_vision_encoder

    distributed.init()
    if distributed.world() > 1 and distributed.is_main() and not quiet:
        click.echo(f"evaluating on {distributed.world()} processes", err=True)
    prepared = prepare_tasks(_requests(settings, pool), pool, split=settings.split, limit=settings.limit)
    evaluator = Evaluator(clip, prepared, device=settings.device, batch_size=settings.batch_size,
                          workers=settings.workers, progress=not quiet)
    return evaluator.evaluate(load_vision_encoder(model, base=clip), name=name)


def check_evaluation(clip: Any, pool: Any, settings: EvalSettings) -> None:
    """Before the merge: what ``evaluate`` would refuse after it (unknown task or split, no such device, a
    vision-only pretrained model). The tasks' splits are opened, one example each."""
    from ..clip.evaluate import pick_device, prepare_tasks
    from ..clip.models import model_type

    pick_device(settings.device)
    if clip is not None and Path(clip).is_dir() and model_type(Path(clip)) != "clip":
        raise ValueError(f"{clip}: evaluation needs a full CLIP model (model_type 'clip', with its text tower) for "
                         "the zero-shot heads")
    prepare_tasks(_requests(settings, pool), pool, split=settings.split, limit=1)


def _requests(settings: EvalSettings, pool: Any) -> list[tuple[str, str | None]]:
    """The (task, dataset) pairs to evaluate on: the --task options, else every task of the pool."""
    from ..clip.evaluate import parse_task_option

    requests = [parse_task_option(t) for t in settings.tasks] or [(t, None) for t in (pool.tasks if pool else [])]
    if not requests:
        raise ValueError("nothing to evaluate on: give --task NAME[=DATASET] or --pool")
    return requests


def on_main_rank(work: Callable[[], T]) -> T:
    """``work()`` once: under a torch.distributed launch rank 0 runs it (a merge, say) and the other ranks wait
    and receive its result; otherwise it simply runs."""
    from ..clip import distributed

    if not distributed.launched():
        return work()
    distributed.init()
    result = work() if distributed.is_main() else None
    return distributed.broadcast(result)


def get_pool(name: str | None) -> Any:
    """The model pool called ``name``, if one is named."""
    if name is None:
        return None
    from ..clip.pool import get_pool as load

    return load(name)


def check_report(path: Path | None, inputs: Iterable[Any], overwrite: bool = False) -> None:
    """Before any work: merge-rs may write the report there (``output.check_file_output``)."""
    if path is not None:
        from ..output import check_file_output

        run(lambda: check_file_output(path, inputs, overwrite))


def save_report(report: dict[str, Any] | None, path: Path | None, inputs: Iterable[Any] = (),
                overwrite: bool = False) -> None:
    """Write the report to ``path``, if both are given (under the output policy; rank 0 only)."""
    if report is not None and path is not None and main_process():
        from ..output import write_report

        run(lambda: write_report(path, report, inputs, overwrite))


def show_report(report: dict[str, Any], title: str) -> None:
    from ..clip.evaluate import format_table

    if not main_process():
        return
    tasks = [k for k in report if k not in ("model_info", "average")]
    click.echo(title)
    click.echo(format_table({"accuracy (%)": report, "loss": report}, tasks, metrics={"loss": "loss"}))
