"""``merge-rs demo``: every method on the offline zoo, evaluated on every task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..plots import check_plot_path, normalized_bars
from .app import OUTPUT_PATH, OVERWRITE_FILES, PLOT, QUIET, THREADS, logger, main, run
from .evaluation import check_report, get_pool, save_report


@main.command()
@click.option("--pool", "pool_name", default="zoo", show_default=True, help="Model pool to merge and evaluate.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate on the first N test examples of each task.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda, cuda:N.")
@THREADS
@click.option("--learned/--no-learned", default=True, show_default=True,
              help="Also run the learned methods (AdaMerging task- and layer-wise, Fisher merging, RegMean; torch).")
@click.option("--adamerging-steps", type=click.IntRange(min=0),
              help="Learning steps of the learned methods that learn by steps (default: the demo's 200).")
@click.option("--lora/--no-lora", default=True, show_default=True,
              help="Also merge the zoo's LoRA adapters with every data-free method (when the pool has them).")
@click.option("--report", "report_path", type=OUTPUT_PATH, help="Write every report as JSON.")
@PLOT
@OVERWRITE_FILES
@QUIET
def demo(pool_name: str, limit: int | None, device: str, threads: int, learned: bool,
         adamerging_steps: int | None, lora: bool, report_path: Path | None, plot_path: Path | None, overwrite: bool,
         quiet: bool) -> None:
    """Merge the offline model zoo with every method and evaluate all models on every task."""
    from ..clip.demo import run_demo

    pool = run(lambda: get_pool(pool_name))
    if plot_path is not None:
        run(lambda: check_plot_path(plot_path, pool.input_paths(), overwrite))
    check_report(report_path, pool.input_paths(), overwrite)
    log = logger(quiet)
    log(f"merge-rs demo on the '{pool_name}' pool (models and data ship with merge-rs; nothing is downloaded)")
    result = run(lambda: run_demo(pool, limit=limit, device=device, threads=threads, learned=learned,
                                  adamerging_steps=adamerging_steps, lora=lora, progress=not quiet, log=log))
    save_report(result.to_dict(), report_path, pool.input_paths(), overwrite)
    if plot_path is not None:
        run(lambda: plot_demo(result, pool_name, plot_path, pool.input_paths(), overwrite))
    click.echo("Accuracy (%) on each task's test set:")
    click.echo(result.table())
    click.echo("\nEach fine-tuned model on every task:")
    click.echo(result.transfer_table())
    seconds = dict(result.merge_seconds)
    if result.lora is not None:
        click.echo("\nThe same merges of the LoRA fine-tunes (adapters over the pretrained model; normalised to them):")
        click.echo(result.lora.table())
        seconds.update({f"{m} (LoRA)": t for m, t in result.lora.merge_seconds.items()})
    merges = ", ".join(f"{m} {s:.2f} s" for m, s in seconds.items())
    click.echo(f"\nmerge times (learned methods: learning included): {merges}; total {result.seconds:.1f} s")


def plot_demo(result: Any, pool_name: str, path: Path, inputs: Any = (), overwrite: bool = False) -> None:
    """Normalised accuracy per method, pretrained and fine-tuned as reference lines."""
    from ..clip.demo import FINE_TUNED, PRETRAINED

    methods = [r for r in result.rows if r not in (FINE_TUNED, PRETRAINED)]
    normalized_bars({m: result.normalized(m) for m in methods},
                    {"fine-tuned": 1.0, "pretrained": result.normalized(PRETRAINED)}, path,
                    f"merge-rs demo on '{pool_name}': merged models against the fine-tuned ones", inputs=inputs,
                    overwrite=overwrite)
