"""``merge-rs extract-lora``: a fine-tune's change from its base as a PEFT LoRA adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .app import AS_JSON, OUTPUT_PATH, QUIET, emit_json, fail, main, run


@main.command("extract-lora")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--pretrained", required=True, type=click.Path(path_type=Path), help="The base model θ₀.")
@click.option("--rank", required=True, type=click.IntRange(min=1), help="Rank of every module (the most, with "
                                                                      "--rank-energy).")
@click.option("--rank-energy", "energy", type=click.FloatRange(min=0, max=1, min_open=True),
              help="Keep, per module, the fewest directions holding this share of ‖τ‖² (e.g. 0.99).")
@click.option("--out", required=True, type=OUTPUT_PATH, help="Adapter directory to write.")
@click.option("--overwrite", is_flag=True, help="Replace an adapter merge-rs wrote there.")
@click.option("--no-model-card", is_flag=True, help="Write no README.md.")
@QUIET
@AS_JSON
def extract_lora(model: Path, pretrained: Path, rank: int, energy: float | None, out: Path, overwrite: bool,
                 no_model_card: bool, quiet: bool, as_json: bool) -> None:
    """Extract MODEL's change from --pretrained as a PEFT LoRA adapter (truncated SVD of each linear weight),
    loadable by peft.PeftModel.from_pretrained and by merge-rs as a model."""
    from ..lora import extract_lora as extract

    report = run(lambda: extract(model, out, pretrained=pretrained, rank=rank, energy=energy, overwrite=overwrite,
                                 progress=not quiet, model_card=not no_model_card))
    if as_json:
        emit_json(report.to_dict())
        return
    modules = report.modules
    worst = max(modules, key=lambda m: m.relative_error)
    ranks = sorted({m.rank for m in modules})
    click.echo(f"{len(modules)} modules, rank {ranks[0] if len(ranks) == 1 else f'{ranks[0]}–{ranks[-1]}'}, "
               f"{report.parameters:,} parameters in {report.seconds:.2f} s → {report.output}")
    click.echo(f"  energy kept: {min(m.energy for m in modules):.4f} at least; largest relative error "
               f"{worst.relative_error:.4f} ({worst.module})")
    if report.left_out:
        largest = max(report.left_out, key=lambda t: t["relative_change"])
        click.echo(f"  left out: {len(report.left_out)} changed tensors a LoRA cannot hold (biases, norms, "
                   f"embeddings), the largest change {largest['relative_change']:.2e} of its norm "
                   f"({largest['tensor']})", err=True)


def stack_adapters(method: str, pretrained: Path | None, adapters: tuple[Path, ...], out: Path, given: dict[str, Any],
                   *, overwrite: bool, run_eval: bool, quiet: bool, as_json: bool, no_model_card: bool,
                   reads: list[Path]) -> None:
    """``merge --out-format peft-cat``: task arithmetic of adapters, their factors stacked (PEFT's cat)."""
    from ..lora_cat import concatenate_adapters

    if method != "task_arithmetic" or set(given) - {"scaling_factor", "coefficients"}:
        fail(click.UsageError("--out-format peft-cat writes task arithmetic (--scaling-factor or --coefficients) of "
                              "adapters; use --out-format peft --rank R for other methods"))
    if pretrained is None or run_eval:
        fail(click.UsageError("--out-format peft-cat needs --pretrained (the adapters' base), and cannot --eval"))
    coefficients = given.get("coefficients") or [given.get("scaling_factor", 0.3)] * len(adapters)
    base: Path = pretrained
    report = run(lambda: concatenate_adapters(adapters, out, pretrained=base, coefficients=coefficients,
                                              overwrite=overwrite, reads=reads, model_card=not no_model_card))
    if as_json:
        emit_json(report.to_dict())
    elif not quiet:
        click.echo(f"{method}: {len(adapters)} adapters stacked → {len(report.ranks)} modules of rank "
                   f"{min(report.ranks.values())}–{max(report.ranks.values())}, {report.parameters:,} parameters "
                   f"→ {report.output}")
