"""One command per learned method (``adamerging``, ``fisher``, ``regmean``), generated from its declaration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from ..learned.method import LearnedMethod, Option, RunContext
from ..learned.registry import LEARNED
from .app import AS_JSON, OUTPUT_PATH, QUIET, THREADS, apply, emit_json, float_list, logger, main, main_process, run
from .evaluation import EVAL_OPTIONS, EvalSettings, check_report, evaluate, get_pool, save_report, show_report

COMMON = [
    click.option("--pool", "pool_name", required=True,
                 help="Model pool: a preset (zoo, clip-vit-base-patch32_TA8, ...) or a JSON file."),
    click.option("--out", required=True, type=OUTPUT_PATH, help="Output directory."),
    click.option("--overwrite", is_flag=True, help="Replace an existing output directory."),
    click.option("--eval", "run_eval", is_flag=True, help="Evaluate the merged model on the pool's tasks afterwards."),
]


# A method option's keyword in the command, apart from the evaluation options' (AdaMerging's `batch_size`, given as
# --train-batch-size, is not the evaluation's --batch-size).
METHOD_OPTION = "method_option_"


def _option(o: Option) -> Callable[[Any], Any]:
    """The click option of a learned method's option."""
    dest = METHOD_OPTION + o.name
    if o.kind == "bool":
        if o.default:
            return click.option(f"{o.cli_flag}/--no-{o.cli_flag[2:]}", dest, default=True, show_default=True,
                                help=o.help)
        return click.option(o.cli_flag, dest, is_flag=True, help=o.help)
    kinds: dict[str, dict[str, Any]] = {
        "int": {"type": click.IntRange(min=o.minimum, max=o.maximum)},
        "float": {"type": click.FloatRange(min=o.minimum, max=o.maximum) if o.minimum is not None else float},
        "choice": {"type": click.Choice(list(o.choices))},
        "path": {"type": click.Path(path_type=Path)},
        "output": {"type": OUTPUT_PATH},
        "floats": {"callback": float_list},
    }
    return click.option(o.cli_flag, dest, default=o.default, show_default=o.default is not None,
                        help=o.help, **kinds[o.kind])


def _command(method: LearnedMethod) -> click.Command:
    def command(pool_name: str, out: Path, overwrite: bool, run_eval: bool, quiet: bool, as_json: bool,
                threads: int = 0, **options: Any) -> None:
        chosen = {key.removeprefix(METHOD_OPTION): options.pop(key) for key in list(options)
                  if key.startswith(METHOD_OPTION)}
        settings = EvalSettings.pop(options)
        pool = run(lambda: get_pool(pool_name))
        inputs = [*pool.input_paths(), out]
        check_report(settings.report_path, inputs, overwrite)
        context = RunContext(device=settings.device, threads=threads, overwrite=overwrite, progress=not quiet,
                             log=logger(quiet or not main_process()))
        result = run(lambda: method(pool, out, context, **chosen))
        evaluation = None
        if run_eval:
            evaluation = run(lambda: evaluate(result.output, pool.pretrained_path(), pool, settings, quiet=quiet,
                                              name=result.method))
        save_report(evaluation, settings.report_path, inputs, overwrite)
        if not main_process():
            return
        if as_json:
            emit_json({**result.to_dict(), **({"evaluation": evaluation} if evaluation else {})})
            return
        cuda = f", peak CUDA memory {result.peak_cuda_mb:.0f} MB" if result.peak_cuda_mb is not None else ""
        click.echo(f"{result.method}: {len(result.tasks)} models merged in {result.seconds:.1f} s → {result.output} "
                   f"(peak RSS {result.peak_rss_mb:.0f} MB{cuda})")
        for what, path in result.files.items():
            click.echo(f"  {what}: {path}")
        if evaluation:
            show_report(evaluation, result.method)

    command.__doc__ = method.summary
    engine = [THREADS] if method.uses_engine else []
    options = [*map(_option, method.options), *engine, *COMMON, *EVAL_OPTIONS, QUIET, AS_JSON]
    return main.command(method.name)(apply(command, options))


COMMANDS = {name: _command(method) for name, method in LEARNED.items()}
