"""``merge-rs eval``: zero-shot evaluation of any CLIP vision encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..plots import accuracy_bars, check_plot_path
from .app import AS_JSON, OVERWRITE_FILES, PLOT, POOL, QUIET, apply, emit_json, main, main_process, run
from .evaluation import EVAL_OPTIONS, EvalSettings, check_report, evaluate, get_pool, save_report, show_report


def eval_command(model: str, pool_name: str | None, clip_ref: str | None, plot_path: Path | None, overwrite: bool,
                 quiet: bool, as_json: bool, **options: Any) -> None:
    """Zero-shot evaluation of a CLIP vision encoder MODEL (directory or hub id; with --pool also 'pretrained' or
    one of the pool's task names) on image-classification tasks. Prints FusionBench's report."""
    from ..clip.pool import resolve_model

    settings = EvalSettings.pop(options)

    def work() -> dict[str, Any]:
        pool = get_pool(pool_name)
        if clip_ref is None and pool is None:
            raise ValueError("give --pool or --clip: zero-shot heads need the pretrained CLIP's text tower")
        clip = resolve_model(clip_ref) if clip_ref else pool.pretrained_path()
        path = _pool_member(pool, model) or resolve_model(model)
        inputs.extend([path, clip, *(pool.input_paths() if pool else [])])
        check_report(settings.report_path, inputs, overwrite)
        if plot_path is not None:
            check_plot_path(plot_path, inputs, overwrite)
        return evaluate(path, clip, pool, settings, quiet=quiet, name=model)

    inputs: list[Path] = []
    report = run(work)
    save_report(report, settings.report_path, inputs, overwrite)
    if plot_path is not None and main_process():
        run(lambda: accuracy_bars(report, f"{model}: zero-shot accuracy", plot_path, inputs=inputs,
                                  overwrite=overwrite))
    if as_json:
        emit_json(report)
    else:
        show_report(report, model)


def _pool_member(pool: Any, model: str) -> Path | None:
    if pool is None or Path(model).exists():
        return None
    if model == "pretrained":
        return pool.pretrained_path()
    if model in pool.models:
        return pool.model_path(model)
    return None


OPTIONS = [
    click.argument("model"),
    POOL,
    click.option("--clip", "clip_ref", help="Pretrained CLIP (hub id or directory) for the text heads and projection "
                                            "(default: the pool's pretrained model)."),
    *EVAL_OPTIONS,
    PLOT,
    OVERWRITE_FILES,
    QUIET,
    AS_JSON,
]

main.command("eval")(apply(eval_command, OPTIONS))
