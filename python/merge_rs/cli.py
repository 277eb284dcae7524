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


METHOD_HELP = "\n".join(f"  {name:17} {m.summary}" for name, m in METHODS.items())


@main.command(epilog=f"Methods:\n\n{METHOD_HELP}")
@click.argument("method", type=click.Choice(sorted(METHODS), case_sensitive=False))
@click.option("--pretrained", type=click.Path(path_type=Path), help="Pretrained model θ₀ (HF directory or .safetensors).")
@click.option("--model", "models", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Fine-tuned model; repeat once per model, in task order.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory (must not exist).")
@click.option("--scaling-factor", type=float, help="λ for task_arithmetic, ties, dare, dare_ties (default 0.3).")
@click.option("--coefficients", callback=_floats, help=f"task_arithmetic: per-task coefficients ({FLOAT_LIST}).")
@click.option("--coefficients-file", type=click.Path(path_type=Path),
              help="task_arithmetic: JSON of per-tensor coefficients (layer-wise weights).")
@click.option("--weights", callback=_floats, help=f"weighted_average: weights ({FLOAT_LIST}).")
@click.option("--normalize/--no-normalize", default=None, help="weighted_average: divide by Σw (default on).")
@click.option("--threshold", type=float, help="ties: percentage of entries kept per task (default 20).")
@click.option("--merge-func", type=click.Choice(["sum", "mean", "max"]), help="ties: aggregation (default sum).")
@click.option("--trim", type=click.Choice(["global", "per-tensor"]), help="ties: top-k scope (default global).")
@click.option("--drop-rate", type=float, help="dare: drop probability (default 0.5).")
@click.option("--seed", type=int, help="dare: seed of the drop mask (default 0).")
@click.option("--rescale/--no-rescale", default=None, help="dare: rescale by 1/(1-p) (default on).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), help="Output dtype (default: the inputs').")
@click.option("--max-shard-size", default=api.DEFAULT_MAX_SHARD_SIZE, show_default=True, help="Largest output shard.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Worker threads (0: one per core).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--allow-nonfinite", is_flag=True, help="Merge despite NaN/Inf parameters (with a warning).")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def merge(method: str, pretrained: Path | None, models: tuple[Path, ...], out: Path, dtype: str | None,
          max_shard_size: str, threads: int, overwrite: bool, allow_nonfinite: bool, quiet: bool, as_json: bool,
          **parameters: Any) -> None:
    """Merge fine-tuned MODELs with METHOD into a new model directory."""
    given = {k: v for k, v in parameters.items() if v is not None}
    report = _run(lambda: api.merge(
        method, models, out, pretrained=pretrained, dtype=dtype, max_shard_size=max_shard_size, threads=threads,
        overwrite=overwrite, allow_nonfinite=allow_nonfinite, progress=not quiet, **given))
    if report.nonfinite_values and not quiet:
        click.echo(f"warning: merged {report.nonfinite_values} non-finite input values", err=True)
    if as_json:
        _emit_json(report.to_dict())
        return
    params = ", ".join(f"{k}={v}" for k, v in report.parameters.items())
    click.echo(f"{report.method}({params}): {len(report.models)} models, {report.merged_tensors} tensors, "
               f"{report.parameters_merged:,} parameters merged in {report.seconds:.2f} s → {report.output}")


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


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), help="Where to build the example models (default: a temp dir).")
@click.option("--preset", default="small", show_default=True, help="Size of the example models.")
@click.option("--models", "count", default=4, show_default=True, help="Number of fine-tuned models.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Worker threads (0: one per core).")
def demo(workdir: Path | None, preset: str, count: int, threads: int) -> None:
    """Build example CLIP-shaped models and merge them with every method."""
    from .demo import format_table, run_demo

    click.echo(f"Building {count} example fine-tuned models ({preset} CLIP vision encoder) and merging them...", err=True)
    rows = _run(lambda: run_demo(workdir, preset, count, threads))
    click.echo("cosine(merged task vector, task i's own task vector):")
    click.echo(format_table(rows))


if __name__ == "__main__":
    main()
