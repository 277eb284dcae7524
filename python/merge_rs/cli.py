"""The ``merge-rs`` command line: a thin click layer over the Python API. Results go to stdout (``--json``
for machines), progress and logs to stderr; errors are one line and a non-zero exit. Nothing here imports
torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

from . import api
from .exceptions import MergeRsError
from .methods import METHODS

FLOAT_LIST = "comma-separated numbers, one per model"


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected {FLOAT_LIST}, got '{value}'") from None


def _fail(error: BaseException) -> NoReturn:
    message = str(error) or type(error).__name__
    click.echo(f"error: {message}", err=True)
    sys.exit(130 if isinstance(error, KeyboardInterrupt) else 1)


def _run(work: Callable[[], Any]) -> Any:
    try:
        return work()
    except (MergeRsError, OSError, ValueError) as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail(KeyboardInterrupt("interrupted; no output was left behind"))


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="merge-rs", prog_name="merge-rs")
def main() -> None:
    """Merge fine-tuned models (task vectors) from safetensors checkpoints, streaming, in bounded memory."""


EVAL_OPTIONS = [
    click.option("--task", "tasks", multiple=True, metavar="NAME[=DATASET]",
                 help="Task to evaluate on, repeatable; DATASET is a hub id or local path (default: the pool's or "
                      "the task's own). Default: every task of --pool."),
    click.option("--split", default="test", show_default=True, help="Dataset split to evaluate on."),
    click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N examples of each task."),
    click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:N."),
    click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                 help="DataLoader worker processes for image preprocessing."),
    click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write the report as JSON."),
]


def _eval_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(EVAL_OPTIONS):
        command = option(command)
    return command


METHOD_HELP = "\n".join(f"  {name:17} {m.summary}" for name, m in METHODS.items())


@main.command(epilog=f"Methods:\n\n{METHOD_HELP}")
@click.argument("method", type=click.Choice(sorted(METHODS), case_sensitive=False))
@click.option("--pretrained", type=click.Path(path_type=Path), help="Pretrained model θ₀ (HF directory or .safetensors).")
@click.option("--model", "models", multiple=True, type=click.Path(path_type=Path),
              help="Fine-tuned model; repeat once per model, in task order.")
@click.option("--pool", "pool_name", help="Take the pretrained and fine-tuned models from a model pool (a preset "
                                          "such as zoo or clip-vit-base-patch32_TA8, or a JSON file).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory (must not exist).")
@click.option("--scaling-factor", type=float, help="λ for task_arithmetic, ties, dare, dare_ties (default 0.3).")
@click.option("--coefficients", callback=_floats, help=f"task_arithmetic: per-task coefficients ({FLOAT_LIST}).")
@click.option("--coefficients-file", type=click.Path(path_type=Path),
              help="task_arithmetic: JSON of per-tensor coefficients (layer-wise weights).")
@click.option("--weights", callback=_floats, help=f"weighted_average, fisher_merging: weights ({FLOAT_LIST}).")
@click.option("--normalize/--no-normalize", default=None, help="weighted_average: divide by Σw (default on).")
@click.option("--threshold", type=float, help="ties: percentage of entries kept per task (default 20).")
@click.option("--merge-func", type=click.Choice(["sum", "mean", "max"]), help="ties: aggregation (default sum).")
@click.option("--trim", type=click.Choice(["global", "per-tensor"]), help="ties: top-k scope (default global).")
@click.option("--drop-rate", type=float, help="dare: drop probability (default 0.5).")
@click.option("--seed", type=int, help="dare: seed of the drop mask (default 0).")
@click.option("--rescale/--no-rescale", default=None, help="dare: rescale by 1/(1-p) (default on).")
@click.option("--fisher", multiple=True, type=click.Path(path_type=Path),
              help="fisher_merging: diagonal-Fisher checkpoint, one per --model in the same order.")
@click.option("--epsilon", type=float, help="fisher_merging: ε added to every Fisher value (default 1e-6).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), help="Output dtype (default: the inputs').")
@click.option("--max-shard-size", default=api.DEFAULT_MAX_SHARD_SIZE, show_default=True, help="Largest output shard.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Worker threads (0: one per core).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--allow-nonfinite", is_flag=True, help="Merge despite NaN/Inf parameters (with a warning).")
@click.option("--eval", "run_eval", is_flag=True, help="Evaluate the merged model afterwards (zero-shot, needs "
                                                       "--pool or a full CLIP --pretrained; see merge-rs eval).")
@_eval_options
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def merge(method: str, pretrained: Path | None, models: tuple[Path, ...], pool_name: str | None, out: Path,
          dtype: str | None, max_shard_size: str, threads: int, overwrite: bool, allow_nonfinite: bool,
          run_eval: bool, tasks: tuple[str, ...], split: str, limit: int | None, batch_size: int, device: str,
          workers: int, report_path: Path | None, quiet: bool, as_json: bool, **parameters: Any) -> None:
    """Merge fine-tuned MODELs (or a --pool's) with METHOD into a new model directory."""
    given = {k: v for k, v in parameters.items() if v is not None and v != ()}
    pool = _run(lambda: _get_pool(pool_name))
    if pool is not None:
        pretrained = pretrained or _run(pool.pretrained_path)
        models = models or tuple(_run(pool.model_paths))
    if not models:
        _fail(click.UsageError("give the fine-tuned models with --model (repeat it) or --pool"))
    report = _run(lambda: api.merge(
        method, models, out, pretrained=pretrained, dtype=dtype, max_shard_size=max_shard_size, threads=threads,
        overwrite=overwrite, allow_nonfinite=allow_nonfinite, progress=not quiet, **given))
    if report.nonfinite_values and not quiet:
        click.echo(f"warning: merged {report.nonfinite_values} non-finite input values", err=True)
    evaluation = None
    if run_eval:
        if pretrained is None:
            _fail(ValueError("--eval needs the pretrained CLIP: give --pool or --pretrained"))
        evaluation = _run(lambda: _evaluate(out, clip=pretrained, pool=pool, tasks=tasks, split=split, limit=limit,
                                            batch_size=batch_size, device=device, workers=workers, quiet=quiet,
                                            name=method))
    _save_report(evaluation, report_path)
    if as_json:
        _emit_json({**report.to_dict(), **({"evaluation": evaluation} if evaluation else {})})
        return
    params = ", ".join(f"{k}={v}" for k, v in report.parameters.items())
    click.echo(f"{report.method}({params}): {len(report.models)} models, {report.merged_tensors} tensors, "
               f"{report.parameters_merged:,} parameters merged in {report.seconds:.2f} s → {report.output}")
    if evaluation:
        _show_report(evaluation, method)


def _get_pool(name: str | None) -> Any:
    if name is None:
        return None
    from .pool import get_pool

    return get_pool(name)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--tensors", "show_tensors", is_flag=True, help="List every tensor.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(path: Path, show_tensors: bool, as_json: bool) -> None:
    """Describe a checkpoint (directory, sharded directory or .safetensors file) from its headers."""
    ckpt = _run(lambda: api.inspect(path))
    if as_json:
        _emit_json(ckpt.to_dict())
        return
    dtypes = ", ".join(f"{d}: {n:,}" for d, n in ckpt.dtypes.items())
    click.echo(f"{ckpt.path}\n  layout      {ckpt.layout_description}\n  tensors     {ckpt.tensor_count}\n"
               f"  parameters  {ckpt.parameters:,} ({dtypes})\n  bytes       {ckpt.bytes:,}\n"
               f"  shards      {len(ckpt.shards)}")
    for shard in ckpt.shards:
        click.echo(f"    {Path(shard['path']).name}: {shard['tensors']} tensors, {shard['bytes']:,} bytes")
    if ckpt.config:
        click.echo(f"  config      {ckpt.config}")
    if show_tensors:
        for t in ckpt.tensors:
            click.echo(f"  {t.name}  {t.dtype}  {list(t.shape)}")


@main.command("cos-sim")
@click.option("--pretrained", required=True, type=click.Path(path_type=Path), help="Pretrained model θ₀.")
@click.option("--model", "models", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Fine-tuned model; repeat once per model.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), help="Also write the matrix as CSV.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Worker threads (0: one per core).")
@click.option("--quiet", "-q", is_flag=True, help="No progress.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def cos_sim(pretrained: Path, models: tuple[Path, ...], csv_path: Path | None, threads: int, quiet: bool,
            as_json: bool) -> None:
    """Cosine similarity of the task vectors τᵢ = θᵢ − θ₀ (float64)."""
    result = _run(lambda: api.cosine_similarity(pretrained, models, threads=threads, progress=not quiet))
    if csv_path:
        csv_path.write_text(result.to_csv())
    if as_json:
        _emit_json(result.to_dict())
        return
    width = max(8, *(len(n) for n in result.names))
    click.echo(" " * width + "".join(f"{n:>{width + 2}}" for n in result.names))
    for name, row in zip(result.names, result.matrix):
        click.echo(f"{name:<{width}}" + "".join(f"{v:>{width + 2}.4f}" for v in row))


def _evaluate(model: Path, *, clip: Path, pool: Any, tasks: tuple[str, ...], split: str, limit: int | None,
              batch_size: int, device: str, workers: int, quiet: bool, name: str | None = None) -> dict[str, Any]:
    from .evaluate import Evaluator, parse_task_option, prepare_tasks
    from .models import load_vision_encoder

    requests = [parse_task_option(t) for t in tasks] or [(t, None) for t in (pool.tasks if pool else [])]
    if not requests:
        raise ValueError("nothing to evaluate on: give --task NAME[=DATASET] or --pool")
    prepared = prepare_tasks(requests, pool, split=split, limit=limit)
    evaluator = Evaluator(clip, prepared, device=device, batch_size=batch_size, workers=workers, progress=not quiet)
    return evaluator.evaluate(load_vision_encoder(model), name=name)


def _save_report(report: dict[str, Any] | None, path: Path | None) -> None:
    if report is not None and path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def _show_report(report: dict[str, Any], title: str) -> None:
    from .evaluate import format_table

    tasks = [k for k in report if k not in ("model_info", "average")]
    click.echo(title)
    click.echo(format_table({"accuracy (%)": report, "loss": report}, tasks, metrics={"loss": "loss"}))


@main.command("eval")
@click.argument("model")
@click.option("--pool", "pool_name", help="Model pool: a preset (zoo, clip-vit-base-patch32_TA8, ...) or a JSON file.")
@click.option("--clip", "clip_ref", help="Pretrained CLIP (hub id or directory) for the text heads and projection "
                                         "(default: the pool's pretrained model).")
@_eval_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate(model: str, pool_name: str | None, clip_ref: str | None, tasks: tuple[str, ...], split: str,
             limit: int | None, batch_size: int, device: str, workers: int, report_path: Path | None, quiet: bool,
             as_json: bool) -> None:
    """Zero-shot evaluation of a CLIP vision encoder MODEL (directory or hub id; with --pool also 'pretrained' or
    one of the pool's task names) on image-classification tasks. Prints FusionBench's report."""
    from .pool import get_pool, resolve_model

    def work() -> dict[str, Any]:
        pool = get_pool(pool_name) if pool_name else None
        if clip_ref is None and pool is None:
            raise ValueError("give --pool or --clip: zero-shot heads need the pretrained CLIP's text tower")
        clip = resolve_model(clip_ref) if clip_ref else pool.pretrained_path()
        path = _pool_member(pool, model) or resolve_model(model)
        return _evaluate(path, clip=clip, pool=pool, tasks=tasks, split=split, limit=limit, batch_size=batch_size,
                         device=device, workers=workers, quiet=quiet, name=model)

    report = _run(work)
    _save_report(report, report_path)
    if as_json:
        _emit_json(report)
    else:
        _show_report(report, model)


def _pool_member(pool: Any, model: str) -> Path | None:
    if pool is None or Path(model).exists():
        return None
    if model == "pretrained":
        return pool.pretrained_path()
    if model in pool.models:
        return pool.model_path(model)
    return None


LEARNED_OPTIONS = [
    click.option("--pool", "pool_name", required=True,
                 help="Model pool: a preset (zoo, clip-vit-base-patch32_TA8, ...) or a JSON file."),
    click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory."),
    click.option("--overwrite", is_flag=True, help="Replace an existing output directory."),
    click.option("--eval", "run_eval", is_flag=True, help="Evaluate the merged model on the pool's tasks afterwards."),
]


def _learned_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = _eval_options(command)
    for option in reversed(LEARNED_OPTIONS):
        command = option(command)
    command = click.option("--quiet", "-q", is_flag=True, help="No progress or log lines.")(command)
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(command)


def _finish_learned(result: Any, pool: Any, run_eval: bool, eval_args: dict[str, Any], quiet: bool,
                    as_json: bool) -> None:
    evaluation = None
    if run_eval:
        args = {k: v for k, v in eval_args.items() if k != "report_path"}
        evaluation = _run(lambda: _evaluate(result.output, clip=pool.pretrained_path(), pool=pool, quiet=quiet,
                                            name=result.method, **args))
    _save_report(evaluation, eval_args.get("report_path"))
    if as_json:
        _emit_json({**result.to_dict(), **({"evaluation": evaluation} if evaluation else {})})
        return
    cuda = f", peak CUDA memory {result.peak_cuda_mb:.0f} MB" if result.peak_cuda_mb is not None else ""
    click.echo(f"{result.method}: {len(result.tasks)} models merged in {result.seconds:.1f} s → {result.output} "
               f"(peak RSS {result.peak_rss_mb:.0f} MB{cuda})")
    for what, path in result.files.items():
        click.echo(f"  {what}: {path}")
    if evaluation:
        _show_report(evaluation, result.method)


def _eval_args(tasks: tuple[str, ...], split: str, limit: int | None, batch_size: int, device: str, workers: int,
               report_path: Path | None) -> dict[str, Any]:
    return {"tasks": tasks, "split": split, "limit": limit, "batch_size": batch_size, "device": device,
            "workers": workers, "report_path": report_path}


def _logger(quiet: bool) -> Callable[[str], None]:
    return (lambda _: None) if quiet else (lambda m: click.echo(m, err=True))


@main.command()
@click.option("--mode", type=click.Choice(["layer", "task"]), default="layer", show_default=True,
              help="One weight per task per parameter tensor (layer) or per task (task).")
@click.option("--steps", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Adam steps (0: just merge with --weights).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--train-batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Unlabeled test images per task per step.")
@click.option("--init", "init_value", type=float, default=0.3, show_default=True, help="Initial λ.")
@click.option("--clamp", is_flag=True, help="Clamp the weights to [0, 1] after every step.")
@click.option("--weights", "weights_file", type=click.Path(exists=True, path_type=Path),
              help="Start from saved weights (a merging_weights.json).")
@click.option("--task-vector-dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16",
              show_default=True, help="Precision of the task vectors held during learning.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Merge worker threads (0: one per core).")
@_learned_options
def adamerging(mode: str, steps: int, lr: float, train_batch_size: int, init_value: float, clamp: bool,
               weights_file: Path | None, task_vector_dtype: str, seed: int, threads: int, pool_name: str, out: Path,
               overwrite: bool, run_eval: bool, quiet: bool, as_json: bool, **eval_options: Any) -> None:
    """AdaMerging: learn task-wise or layer-wise merging weights by entropy minimisation on unlabeled test
    images, then merge with them (weights and loss curve are saved in the output directory)."""
    from .learned.adamerging import adamerging as run
    from .pool import get_pool

    pool = _run(lambda: get_pool(pool_name))
    result = _run(lambda: run(pool, out, mode=mode, steps=steps, lr=lr, batch_size=train_batch_size,
                              init=init_value, clamp=clamp, weights=weights_file, task_vector_dtype=task_vector_dtype,
                              device=eval_options["device"], seed=seed, threads=threads, progress=not quiet,
                              overwrite=overwrite, log=_logger(quiet)))
    _finish_learned(result, pool, run_eval, _eval_args(**eval_options), quiet, as_json)


@main.command()
@click.option("--examples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Training images per task for the Fisher.")
@click.option("--fisher-batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="Weight each model by the inverse of its Fisher's global L2 norm.")
@click.option("--epsilon", type=float, default=1e-6, show_default=True, help="Added to every Fisher value.")
@click.option("--scaling", callback=_floats, help=f"Per-model scaling coefficients ({FLOAT_LIST}; default 1).")
@click.option("--fisher-dir", type=click.Path(path_type=Path), help="Keep the Fisher safetensors here.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Merge worker threads (0: one per core).")
@_learned_options
def fisher(examples: int, fisher_batch_size: int, normalize: bool, epsilon: float, scaling: list[float] | None,
           fisher_dir: Path | None, threads: int, pool_name: str, out: Path, overwrite: bool, run_eval: bool,
           quiet: bool, as_json: bool, **eval_options: Any) -> None:
    """Fisher merging: diagonal Fisher of each fine-tuned model on its task's training images, then the
    Fisher-weighted average (in the Rust engine)."""
    from .learned.fisher import fisher_merging
    from .pool import get_pool

    pool = _run(lambda: get_pool(pool_name))
    result = _run(lambda: fisher_merging(pool, out, examples=examples, batch_size=fisher_batch_size,
                                         normalize=normalize, epsilon=epsilon, scaling=scaling, fisher_dir=fisher_dir,
                                         device=eval_options["device"], threads=threads, overwrite=overwrite,
                                         log=_logger(quiet)))
    _finish_learned(result, pool, run_eval, _eval_args(**eval_options), quiet, as_json)


@main.command()
@click.option("--examples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Training images per task for the Gram matrices.")
@click.option("--gram-batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="Scale of the Gram matrices' off-diagonal entries.")
@_learned_options
def regmean(examples: int, gram_batch_size: int, alpha: float, pool_name: str, out: Path, overwrite: bool,
            run_eval: bool, quiet: bool, as_json: bool, **eval_options: Any) -> None:
    """RegMean: each linear layer solved from the models' input Gram matrices; other parameters averaged."""
    from .learned.regmean import regmean as run
    from .pool import get_pool

    pool = _run(lambda: get_pool(pool_name))
    result = _run(lambda: run(pool, out, examples=examples, batch_size=gram_batch_size, alpha=alpha,
                              device=eval_options["device"], overwrite=overwrite, log=_logger(quiet)))
    _finish_learned(result, pool, run_eval, _eval_args(**eval_options), quiet, as_json)


@main.command()
@click.option("--pool", "pool_name", default="zoo", show_default=True, help="Model pool to merge and evaluate.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N test examples of each task.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:N.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Merge worker threads (0: one per core).")
@click.option("--learned/--no-learned", default=True, show_default=True,
              help="Also run AdaMerging (task- and layer-wise), Fisher merging and RegMean (torch).")
@click.option("--adamerging-steps", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write every report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines.")
def demo(pool_name: str, limit: int | None, device: str, threads: int, learned: bool, adamerging_steps: int,
         report_path: Path | None, quiet: bool) -> None:
    """Merge the offline model zoo with every method and evaluate all models on every task."""
    from .demo import run_demo

    log = (lambda _: None) if quiet else (lambda m: click.echo(m, err=True))
    log(f"merge-rs demo on the '{pool_name}' pool (models and data ship with merge-rs; nothing is downloaded)")
    result = _run(lambda: run_demo(pool_name, limit=limit, device=device, threads=threads, learned=learned,
                                   adamerging_steps=adamerging_steps, progress=not quiet, log=log))
    _save_report(result.to_dict(), report_path)
    click.echo("Accuracy (%) on each task's test set:")
    click.echo(result.table())
    click.echo("\nEach fine-tuned model on every task:")
    click.echo(result.transfer_table())
    merges = ", ".join(f"{m} {s:.2f} s" for m, s in result.merge_seconds.items())
    click.echo(f"\nmerge times (learned methods: learning included): {merges}; total {result.seconds:.1f} s")


if __name__ == "__main__":
    main()
