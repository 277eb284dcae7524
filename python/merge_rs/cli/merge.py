"""``merge-rs merge``: its method parameters are generated from the engine's method table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import api
from ..methods import METHODS
from .app import AS_JSON, OUTPUT_PATH, POOL, QUIET, THREADS, apply, emit_json, fail, main, main_process, run
from .evaluation import (EVAL_OPTIONS, EvalSettings, check_evaluation, check_report, evaluate, get_pool,
                         on_main_rank, save_report, show_report)
from .method_options import method_list, parameter_options

OPTIONS = [
    click.argument("method", type=click.Choice(list(METHODS), case_sensitive=False)),
    click.option("--pretrained", type=click.Path(path_type=Path),
                 help="Pretrained model θ₀ (HF directory or .safetensors)."),
    click.option("--model", "models", multiple=True, type=click.Path(path_type=Path),
                 help="Fine-tuned model; repeat once per model, in task order."),
    POOL,
    click.option("--out", required=True, type=OUTPUT_PATH, help="Output directory (must not exist)."),
    click.option("--out-format", type=click.Choice(["model", "peft", "peft-cat"]), default="model",
                 show_default=True,
                 help="A full model, or a PEFT LoRA adapter over --pretrained: the merged task vector truncated by "
                      "SVD per module (peft, needs --rank), or, for task arithmetic of adapters, their factors "
                      "stacked, exact (peft-cat, PEFT's cat)."),
    click.option("--rank", "adapter_rank", type=click.IntRange(min=1), help="With --out-format peft: the adapter's "
                                                                            "rank (the most, with --rank-energy)."),
    click.option("--rank-energy", "adapter_energy", type=click.FloatRange(min=0, max=1, min_open=True),
                 help="With --out-format peft: per module, the fewest directions holding this share of ‖τ‖²."),
    *parameter_options(),
    click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
                 help="Output dtype (default: the inputs')."),
    click.option("--max-shard-size", default=api.DEFAULT_MAX_SHARD_SIZE, show_default=True,
                 help="Largest output shard."),
    THREADS,
    click.option("--memory-budget", help="Most memory the whole-tensor methods (SVD family, SLERP, breadcrumbs, "
                                         "…) hold at once, e.g. 512MB [default: 160MiB]; a larger tensor runs alone."),
    click.option("--overwrite", is_flag=True, help="Replace an existing output directory."),
    click.option("--no-model-card", is_flag=True, help="Do not write README.md (the model card and its recipe)."),
    click.option("--allow-nonfinite", is_flag=True, help="Merge despite NaN/Inf parameters (with a warning)."),
    click.option("--eval", "run_eval", is_flag=True, help="Evaluate the merged model afterwards (zero-shot, needs "
                                                          "--pool or a full CLIP --pretrained; see merge-rs eval)."),
    *EVAL_OPTIONS,
    QUIET,
    AS_JSON,
]


def merge(method: str, pretrained: Path | None, models: tuple[Path, ...], pool_name: str | None, out: Path,
          out_format: str, adapter_rank: int | None, adapter_energy: float | None, dtype: str | None, max_shard_size: str, threads: int, memory_budget: str | None, overwrite: bool,
          no_model_card: bool, allow_nonfinite: bool, run_eval: bool, quiet: bool, as_json: bool,
          **options: Any) -> None:
    """Merge fine-tuned MODELs (or a --pool's) with METHOD into a new model directory."""
    settings = EvalSettings.pop(options)
    given = {k: v for k, v in options.items() if v is not None and v != ()}
    pool = run(lambda: get_pool(pool_name))
    if pool is not None:
        pretrained = pretrained or run(pool.pretrained_path)
        models = models or tuple(run(pool.model_paths))
    if not models:
        fail(click.UsageError("give the fine-tuned models with --model (repeat it) or --pool"))
    if run_eval and pretrained is None:
        fail(ValueError("--eval needs the pretrained CLIP: give --pool or --pretrained"))
    if (out_format == "peft") != (adapter_rank is not None) or (adapter_energy is not None and adapter_rank is None):
        fail(click.UsageError("--out-format peft and --rank go together (--rank-energy with them)"))
    if out_format == "peft-cat":
        from .lora import stack_adapters

        return stack_adapters(method, pretrained, models, out, given, overwrite=overwrite, run_eval=run_eval,
                              quiet=quiet, as_json=as_json, no_model_card=no_model_card,
                              reads=pool.input_paths() if pool else [])
    if out_format == "peft":
        if run_eval or pretrained is None:
            fail(click.UsageError("--out-format peft needs --pretrained (the adapter's base), and cannot --eval"))
        from ..lora import merge_to_adapter

        assert adapter_rank is not None and pretrained is not None
        base, rank = pretrained, adapter_rank
        adapter = run(lambda: merge_to_adapter(
            method, models, out, pretrained=base, rank=rank, energy=adapter_energy, overwrite=overwrite,
            progress=not quiet, model_card=not no_model_card, reads=pool.input_paths() if pool else [], threads=threads,
            memory_budget=memory_budget, allow_nonfinite=allow_nonfinite, **given))
        if as_json:
            emit_json(adapter.to_dict())
        else:
            click.echo(f"{method}: {len(models)} models → a rank-{adapter_rank} adapter of {len(adapter.modules)} "
                       f"modules, {adapter.parameters:,} parameters → {adapter.output}")
        return
    reads = pool.input_paths() if pool is not None else []
    report_inputs = [*models, *([pretrained] if pretrained else []), *reads, out]
    check_report(settings.report_path, report_inputs, overwrite)
    if run_eval:
        run(lambda: check_evaluation(pretrained, pool, settings))
    report = run(lambda: on_main_rank(lambda: api.merge(
        method, models, out, pretrained=pretrained, dtype=dtype, max_shard_size=max_shard_size, threads=threads,
        memory_budget=memory_budget, overwrite=overwrite, allow_nonfinite=allow_nonfinite, progress=not quiet,
        reads=reads, model_card=not no_model_card, **given)))
    if (report.nonfinite_inputs or report.nonfinite_outputs) and not quiet and main_process():
        click.echo(f"warning: {report.nonfinite_inputs} non-finite input values merged, "
                   f"{report.nonfinite_outputs} non-finite values written", err=True)
    evaluation = None
    if run_eval and pretrained is not None:
        clip = pretrained
        evaluation = run(lambda: evaluate(out, clip, pool, settings, quiet=quiet, name=method))
    save_report(evaluation, settings.report_path, report_inputs, overwrite)
    if not main_process():
        return
    if as_json:
        emit_json({**report.to_dict(), **({"evaluation": evaluation} if evaluation else {})})
        return
    params = ", ".join(f"{k}={v}" for k, v in report.parameters.items())
    click.echo(f"{report.method}({params}): {len(report.models)} models, {report.merged_tensors} tensors, "
               f"{report.parameters_merged:,} parameters merged in {report.seconds:.2f} s → {report.output}")
    if evaluation:
        show_report(evaluation, method)


main.command("merge", epilog=method_list())(apply(merge, OPTIONS))
