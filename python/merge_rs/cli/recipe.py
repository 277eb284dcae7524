"""``merge-rs run RECIPE [KEY=VALUE ...]`` (a merge-rs recipe, a mergekit config, or a model card holding
a recipe) and ``merge-rs recipe-schema``."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from .app import AS_JSON, OUTPUT_PATH, QUIET, THREADS, emit, emit_json, fail, logger, main, main_process, run
from .evaluation import (EvalSettings, check_evaluation, check_report, evaluate, on_main_rank, save_report,
                         show_report)


@main.command("run")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--out", type=OUTPUT_PATH, help="Output directory (default: the recipe's out).")
@click.option("--intermediate-dir", "-I", type=OUTPUT_PATH,
              help="For a mergekit-multi config (several YAML documents): where its named merges are written.")
@click.option("--dry-run", is_flag=True, help="Check everything and print the plan (with --json: every tensor's "
                                             "shape and parameters); read no tensor data.")
@click.option("--no-model-card", is_flag=True, help="Do not write README.md (the model card) into the output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing merge-rs output directory (and a report file "
                                               "merge-rs did not write).")
@THREADS
@click.option("--memory-budget", help="Most memory the whole-tensor methods hold at once [default: 160MiB].")
@QUIET
@AS_JSON
def run_recipe(recipe: Path, overrides: tuple[str, ...], out: Path | None, intermediate_dir: Path | None,
               dry_run: bool, no_model_card: bool, overwrite: bool, threads: int, memory_budget: str | None,
               quiet: bool, as_json: bool) -> None:
    """Merge as RECIPE says: merge-rs's recipe (method: ...), a mergekit config (merge_method: ...), a
    mergekit-multi config (several documents, named merges written under --intermediate-dir), or a model card
    with its recipe. KEY=VALUE sets a field first, e.g. parameters.scaling_factor=0.4 or
    models.0.parameters.weight=0.5."""
    from ..recipes.multi import load_steps
    from ..recipes.runner import job_from_source

    steps = run(lambda: load_steps(recipe, list(overrides), intermediate_dir))
    options = RunOptions(dry_run, not no_model_card, overwrite, threads, memory_budget, quiet, as_json)
    if len(steps) > 1 or steps[0].name:
        from .multi_recipe import run_steps

        return run_steps(steps, out, intermediate_dir, options)
    if intermediate_dir is not None:
        fail(click.UsageError(f"{recipe} is one merge: --intermediate-dir is for a multi-document config's "
                              "named merges"))
    _run_one(recipe, run(lambda: job_from_source(steps[0].source)), out, options)


@dataclass(frozen=True)
class RunOptions:
    """``merge-rs run``'s options, the same for one merge and for each merge of a multi-document config."""

    dry_run: bool
    model_card: bool
    overwrite: bool
    threads: int
    memory_budget: str | None
    quiet: bool
    as_json: bool


def _run_one(recipe: Path, job: Any, out: Path | None, o: RunOptions) -> None:
    from ..recipes import describe, execute, prepare
    from ..recipes.source import is_card
    from ..recipes.runner import plan_dict

    log = logger(o.quiet or not main_process())
    plan = run(lambda: prepare(job))
    settings = _eval_settings(job)
    if is_card(recipe):  # a card may come from anywhere: it does not choose where files go
        if job.out:
            log(f"note: {recipe} is a model card; its out: ({job.out}) is not used, --out is")
        if settings is not None and settings.report_path is not None:
            log(f"note: {recipe} is a model card; its evaluation.report ({settings.report_path}) is not written")
            settings = replace(settings, report_path=None)
        job.out = None
    target = out or (Path(job.out) if job.out else None)
    # every check the merge and the evaluation would make, short of reading tensor data (a dry run makes them too)
    inputs: list[Any] = [*plan.models, *([plan.pretrained] if plan.pretrained else []), recipe,
                         *([target] if target else [])]
    check_report(settings.report_path if settings else None, inputs, o.overwrite)
    if settings is not None:
        if plan.pretrained is None:
            fail(ValueError(f"{recipe}: evaluation needs the pretrained CLIP (pretrained: or pool:)"))
        run(lambda: check_evaluation(plan.pretrained, job.pool, settings))
    if o.dry_run:
        if o.as_json:
            emit_json(plan_dict(plan))
        else:
            click.echo(describe(plan, o.threads))
        return
    for warning in job.warnings:
        log(f"warning: {warning}")
    if target is None:
        fail(click.UsageError("give the output directory with --out (or out: in the recipe)"))
    report = run(lambda: on_main_rank(lambda: execute(plan, target, overwrite=o.overwrite, threads=o.threads,
                                                      memory_budget=o.memory_budget, progress=not o.quiet,
                                                      model_card_file=o.model_card)))
    evaluation = None
    if settings is not None:
        clip = plan.pretrained
        evaluation = run(lambda: evaluate(target, clip, job.pool, settings, quiet=o.quiet, name=job.method))
        save_report(evaluation, settings.report_path, inputs, o.overwrite)
    if not main_process():
        return
    if o.as_json:
        emit_json({**report.to_dict(), **({"evaluation": evaluation} if evaluation else {})})
        return
    click.echo(summary(job, plan, report))
    if evaluation:
        show_report(evaluation, job.method)


def summary(job: Any, plan: Any, report: Any) -> str:
    """The line a merge ends with."""
    groups = f", {len(plan.groups) + 1} parameter groups" if plan.groups else ""
    models = f"{len(report.models)} model{'s' * (len(report.models) != 1)}"
    return (f"{job.method} ({job.dialect} recipe): {models}, {report.merged_tensors} tensors"
            f"{groups}, {report.parameters_merged:,} parameters merged in {report.seconds:.2f} s → {report.output}")


def _eval_settings(job: Any) -> EvalSettings | None:
    e = job.evaluation
    if e is None:
        return None
    return EvalSettings(tasks=tuple(e.tasks), split=e.split, limit=e.limit, batch_size=e.batch_size,
                        device=e.device, workers=0, report_path=Path(e.report) if e.report else None)


@main.command("recipe-schema")
def recipe_schema() -> None:
    """Print the JSON Schema of merge-rs recipes (every method's parameters), for editors."""
    from ..recipes import recipe_json_schema

    emit(json.dumps(recipe_json_schema(), indent=2))
