"""``merge-rs info``, ``cos-sim`` and ``methods``: looking at checkpoints, task vectors and the method table."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import api
from ..methods import markdown_table
from ..output import check_file_output, generator, write_file_output
from ..plots import check_plot_path, cosine_heatmap
from ..text import printable
from .app import AS_JSON, OUTPUT_PATH, OVERWRITE_FILES, PLOT, POOL, QUIET, THREADS, emit_json, fail, main, run
from .method_options import method_details


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--tensors", "show_tensors", is_flag=True, help="List every tensor.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def info(path: Path, show_tensors: bool, as_json: bool) -> None:
    """Describe a checkpoint (directory, sharded directory or .safetensors file) from its headers."""
    ckpt = run(lambda: api.inspect(path))
    if as_json:
        emit_json(ckpt.to_dict())
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
            click.echo(f"  {printable(t.name)}  {t.dtype}  {list(t.shape)}")


@main.command("cos-sim")
@click.option("--pretrained", type=click.Path(path_type=Path), help="Pretrained model θ₀.")
@click.option("--model", "models", multiple=True, type=click.Path(path_type=Path),
              help="Fine-tuned model; repeat once per model.")
@POOL
@click.option("--csv", "csv_path", type=OUTPUT_PATH, help="Also write the matrix as CSV.")
@PLOT
@OVERWRITE_FILES
@THREADS
@QUIET
@AS_JSON
def cos_sim(pretrained: Path | None, models: tuple[Path, ...], pool_name: str | None, csv_path: Path | None,
            plot_path: Path | None, overwrite: bool, threads: int, quiet: bool, as_json: bool) -> None:
    """Cosine similarity of the task vectors τᵢ = θᵢ − θ₀ (float64) of --model (or a --pool's models);
    --plot draws the labelled heatmap."""
    inputs: list[Path] = []
    if pool_name is not None:
        from .evaluation import get_pool

        pool = run(lambda: get_pool(pool_name))
        pretrained = pretrained or run(pool.pretrained_path)
        models = models or tuple(run(pool.model_paths))
        inputs += run(pool.input_paths)
    if pretrained is None or not models:
        fail(click.UsageError("give --pretrained and --model (repeat it), or --pool"))
    inputs += [pretrained, *models]
    if csv_path is not None:
        run(lambda: check_file_output(csv_path, inputs, overwrite))
    if plot_path is not None:
        run(lambda: check_plot_path(plot_path, inputs, overwrite))
    result = run(lambda: api.cosine_similarity(pretrained, models, threads=threads, progress=not quiet))
    if csv_path is not None:
        text = result.to_csv(corner=generator())
        run(lambda: write_file_output(csv_path, text.encode(), inputs, overwrite))
    if plot_path is not None:
        run(lambda: cosine_heatmap(result.names, result.matrix, plot_path, inputs=inputs, overwrite=overwrite))
    if as_json:
        emit_json(result.to_dict())
        return
    width = max(9, *(len(n) for n in result.names))
    cell = lambda v: f"{'undefined' if v is None else f'{v:.4f}':>{width + 2}}"  # noqa: E731
    click.echo(" " * width + "".join(f"{n:>{width + 2}}" for n in result.names))
    for name, row in zip(result.names, result.matrix):
        click.echo(f"{name:<{width}}" + "".join(map(cell, row)))
    if any(v is None for row in result.matrix for v in row):
        click.echo("undefined: a task vector is zero (the model equals the pretrained one), so it has no direction")


@main.command()
@click.option("--markdown", is_flag=True, help="Print the method table as Markdown (the README's).")
@AS_JSON
def methods(markdown: bool, as_json: bool) -> None:
    """The merge methods, their papers and their parameters with defaults."""
    if as_json:
        from .. import _core

        emit_json(json.loads(_core.method_table_json()))
    elif markdown:
        click.echo(markdown_table(), nl=False)
    else:
        click.echo(method_details())
