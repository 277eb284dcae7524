"""``merge-rs sweep``: merge every point of a parameter grid, evaluate each on the pool's tasks, pick the best,
and draw it. Each merge lives in a temporary directory only while it is evaluated (disk use stays at about one
model); the report file records every point, so an interrupted sweep resumes from it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from .. import api
from ..methods import METHODS, get_method
from ..plots import check_plot_path, sweep_lines
from ..sweep import (MAX_POINTS, SweepLog, best_point, check_grid_size, grid, parse_axis, point_key,
                     remove_stale_scratch, scratch_prefix)
from .app import (AS_JSON, OUTPUT_PATH, PLOT, QUIET, THREADS, emit_json, fail, logger, main,
                   main_process, run)
from .evaluation import check_report, get_pool, on_main_rank


@main.command("sweep")
@click.argument("method", type=click.Choice(list(METHODS), case_sensitive=False))
@click.option("--pool", "pool_name", required=True, help="Model pool: a preset (zoo, ...) or a JSON file.")
@click.option("--param", "params", multiple=True, required=True, metavar="NAME=START:STOP:STEP|A,B,C",
              help="A parameter's values (both ends of a range included); repeat for a grid.")
@click.option("--split", default="validation", show_default=True,
              help="Dataset split to choose on (test is optimistic: it is the split results are reported on).")
@click.option("--select", default="average", show_default=True, help="Choose by: average or a task's accuracy.")
@click.option("--out", type=OUTPUT_PATH, help="Write the best point's merge here (with its card).")
@click.option("--keep", type=OUTPUT_PATH, help="Keep every point's merge under this directory.")
@click.option("--report", "report_path", type=OUTPUT_PATH,
              help="The sweep's JSON report (FusionBench's report per point); a rerun resumes from it.")
@click.option("--max-points", type=click.IntRange(min=1), default=MAX_POINTS, show_default=True,
              help="Refuse a grid with more points than this (counted before anything is built).")
@click.option("--spread-grid", is_flag=True, help="Under torchrun: each rank merges and evaluates whole points "
                                                 "(instead of a share of every evaluation).")
@PLOT
@click.option("--overwrite", is_flag=True, help="Replace an existing --out that merge-rs wrote, and --report or "
                                               "--plot files even if merge-rs did not write them.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N examples of each task.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:N.")
@THREADS
@QUIET
@AS_JSON
def sweep(method: str, pool_name: str, params: tuple[str, ...], split: str, select: str, out: Path | None,
          keep: Path | None, report_path: Path | None, max_points: int, spread_grid: bool, plot_path: Path | None,
          overwrite: bool, limit: int | None, batch_size: int, device: str, threads: int, quiet: bool,
          as_json: bool) -> None:
    """Sweep METHOD's parameters over a grid on a pool: merge, evaluate, choose, plot."""
    log = logger(quiet or not main_process())
    info = get_method(method)
    if info.extra_inputs is not None or any(p.required for p in info.parameters):
        fail(ValueError(f"{info.name} is not data-free (it needs {info.extra_inputs or 'required parameters'}); "
                        "sweep takes data-free methods"))
    axes = [run(lambda: parse_axis(p, info, max_points)) for p in params]
    run(lambda: check_grid_size(axes, max_points))
    pool = run(lambda: get_pool(pool_name))
    inputs = [*pool.input_paths(), *(p for p in (out, keep) if p)]
    if plot_path is not None:
        run(lambda: check_plot_path(plot_path, inputs, overwrite))
    check_report(report_path, inputs, overwrite)
    identity = {"method": info.name, "pool": pool_name, "split": split, "limit": limit,
                "grid": {a.name: list(a.values) for a in axes}}
    sweep_log = run(lambda: SweepLog(report_path if main_process() else None, identity, inputs, overwrite))
    points = grid(axes)
    run(lambda: _check_before_work(pool, select, out, keep, points, sweep_log, overwrite))
    for stale in remove_stale_scratch():
        log(f"removed {stale}, left by a sweep that was killed")
    if split == "test":
        log("warning: choosing on the test split is optimistic (the choice sees the data results are reported on)")
    evaluator = run(lambda: _evaluator(pool, split, limit, batch_size, device, quiet, shard=not spread_grid))
    evaluate_point = lambda point: _point(info.name, pool, evaluator, point, keep, threads, log)  # noqa: E731
    reports = run(lambda: _points(points, sweep_log, evaluate_point, spread_grid, log))
    references = run(lambda: _references(sweep_log, pool, evaluator, log))
    best = run(lambda: best_point(reports, select))
    sweep_log.data["best"] = {"index": best, "parameters": points[best], "select": select,
                              "accuracy": reports[best][select]["accuracy"]}
    run(sweep_log.save)
    if out is not None:
        run(lambda: on_main_rank(lambda: api.merge(info.name, pool.model_paths(), out, threads=threads,
                                                   overwrite=overwrite, pretrained=pool.pretrained_path(),
                                                   reads=pool.input_paths(),
                                                   **points[best])))
    if plot_path is not None and main_process():
        x = [p[axes[0].name] for p in points] if len(axes) == 1 else list(range(len(points)))
        label = axes[0].name if len(axes) == 1 else "point (see the report)"
        run(lambda: sweep_lines(label, x, reports, best, references, plot_path,
                                f"{info.name} on {pool_name} ({split} split)", inputs=inputs, overwrite=overwrite))
    if as_json:
        emit_json(sweep_log.data)
    elif main_process():
        _show(points, reports, references, best, select)


def _check_before_work(pool: Any, select: str, out: Path | None, keep: Path | None, points: list[dict[str, Any]],
                       sweep_log: SweepLog, overwrite: bool) -> None:
    """What would otherwise fail only after every point is merged and evaluated."""
    from ..output import check_output

    if select != "average" and select not in pool.tasks:
        raise ValueError(f"--select {select}: not a task of this pool (average, {', '.join(pool.tasks)})")
    if out is not None:
        check_output(out, pool.input_paths(), overwrite)
    if keep is not None:
        done = {point_key(p["parameters"]) for p in sweep_log.data["points"]}
        for point in points:
            if point_key(point) not in done:
                check_output(keep / _point_name(point), pool.input_paths(), False)


def _point_name(point: dict[str, Any]) -> str:
    return "-".join(f"{k}={v}" for k, v in point.items())


def _evaluator(pool: Any, split: str, limit: int | None, batch_size: int, device: str, quiet: bool,
               shard: bool) -> Any:
    from ..clip import distributed
    from ..clip.evaluate import Evaluator, prepare_tasks

    distributed.init()
    try:
        tasks = prepare_tasks([(t, None) for t in pool.tasks], pool, split=split, limit=limit)
    except ValueError as e:
        raise ValueError(f"{e} (a sweep chooses on --split {split}; --split test is optimistic)") from None
    return Evaluator(pool.pretrained_path(), tasks, device=device, batch_size=batch_size, progress=not quiet,
                     cache_pixels=True, shard=shard)


def _points(points: list[dict[str, Any]], sweep_log: SweepLog, evaluate_point: Any, spread: bool,
            log: Any) -> list[dict[str, Any]]:
    """Every point's report, in grid order: from the log when a previous run evaluated it, else merged and
    evaluated now, and logged as soon as it is known. Spread over ranks, rank r takes every world-th point and
    the reports are gathered after each round."""
    from ..clip import distributed

    saved = distributed.broadcast({point_key(p["parameters"]): p["report"] for p in sweep_log.data["points"]})
    rank, world = (distributed.rank(), distributed.world()) if spread else (0, 1)
    reports: dict[str, dict[str, Any]] = {}
    for start in range(0, len(points), world):
        batch = points[start:start + world]
        mine = batch[rank] if rank < len(batch) else None
        local = None
        if mine is not None:
            local = saved.get(point_key(mine))
            if local is None:
                local = evaluate_point(mine)
            else:
                log(f"{_shown(mine)}: already in the report")
        results = distributed.gather(local) if spread else [local]
        for point, report in zip(batch, results):
            reports[point_key(point)] = report
            if point_key(point) not in saved:
                sweep_log.add(point, report)
    return [reports[point_key(p)] for p in points]


def _shown(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _point(method: str, pool: Any, evaluator: Any, point: dict[str, Any], keep: Path | None, threads: int,
           log: Any) -> dict[str, Any]:
    """Merge ``point`` into a temporary directory (or under ``keep``) and evaluate it."""
    from ..clip import distributed
    from ..clip.models import load_vision_encoder

    name = _point_name(point)
    with tempfile.TemporaryDirectory(prefix=scratch_prefix()) as scratch:
        target = keep / name if keep is not None and (distributed.is_main() or not evaluator.shard) \
            else Path(scratch) / "merged"
        api.merge(method, pool.model_paths(), target, pretrained=pool.pretrained_path(), threads=threads,
                  reads=pool.input_paths(), model_card=False, **point)
        report = evaluator.evaluate(load_vision_encoder(target), name=f"{method}({_shown(point)})")
    report["model_info"]["parameters"] = point
    log(f"{_shown(point)}: average accuracy {100 * report['average']['accuracy']:.1f} %")
    return report


def _references(sweep_log: SweepLog, pool: Any, evaluator: Any, log: Any) -> dict[str, dict[str, Any]]:
    """The pretrained model on every task and each fine-tuned model on its own task (the sweep's reference
    lines), from the log when it has them."""
    from ..clip import distributed
    from ..clip.models import load_vision_encoder

    saved = distributed.broadcast(sweep_log.data["references"] or None)
    if saved:
        return saved
    log("evaluating the pretrained and fine-tuned models (the reference lines)")

    def compute() -> dict[str, dict[str, Any]]:
        pretrained = evaluator.evaluate(load_vision_encoder(pool.pretrained_path()), name="pretrained")
        tuned: dict[str, Any] = {t: evaluator.evaluate_task(pool.load_vision(t), t)
                                 for t in pool.tasks}
        tuned["average"] = {k: sum(tuned[t][k] for t in pool.tasks) / len(pool.tasks) for k in ("accuracy", "loss")}
        return {"pretrained": pretrained, "fine-tuned (individual)": tuned}

    # Sharded evaluators evaluate together; whole-model evaluators (a spread grid) leave it to rank 0.
    alone = not evaluator.shard and distributed.world() > 1
    references = distributed.broadcast(compute() if distributed.is_main() else None) if alone else compute()
    sweep_log.data["references"] = references
    sweep_log.save()
    return references


def _show(points: list[dict[str, Any]], reports: list[dict[str, Any]], references: dict[str, dict[str, Any]],
          best: int, select: str) -> None:
    from ..clip.evaluate import format_table

    tasks = [k for k in reports[0] if k not in ("model_info", "average")]
    rows = {name: r for name, r in references.items()}
    for i, (point, report) in enumerate(zip(points, reports)):
        rows[("* " if i == best else "  ") + ", ".join(f"{k}={v}" for k, v in point.items())] = report
    click.echo(format_table(rows, tasks))
    shown = ", ".join(f"{k}={v}" for k, v in points[best].items())
    click.echo(f"best ({select}): {shown}, {100 * reports[best][select]['accuracy']:.1f} %")
