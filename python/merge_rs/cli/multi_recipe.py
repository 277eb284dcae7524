"""``merge-rs run`` on a mergekit-multi config: every document checked and every output checked before the first
merge, then the merges in dependency order, each with its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .app import emit_json, fail, logger, main_process, run
from .recipe import RunOptions, summary


def run_steps(steps: list[Any], out: Path | None, intermediate_dir: Path | None, o: RunOptions) -> None:
    from ..recipes import describe, execute, prepare
    from ..recipes.mergekit import is_mergekit, job_from_mergekit
    from ..recipes.multi import targets
    from ..recipes.runner import plan_dict

    log = logger(o.quiet or not main_process())
    for step in steps:
        if not is_mergekit(step.source.data):
            fail(step.source.error((), "each document of a multi-document config is a mergekit config "
                                       "(merge_method: ...)"))
    jobs = [run(lambda s=step: job_from_mergekit(s.source)) for step in steps]
    places = run(lambda: targets(steps, out, intermediate_dir, o.overwrite))
    # what can be planned now: every merge that reads no intermediate merge
    plans = {i: run(lambda j=job: prepare(j)) for i, (step, job) in enumerate(zip(steps, jobs)) if not step.needs}
    if o.dry_run:
        if o.as_json:
            emit_json({"merges": [{"name": step.name, "out": str(place), "needs": step.needs,
                                   "plan": plan_dict(plans[i]) if i in plans else None}
                                  for i, (step, place) in enumerate(zip(steps, places))]})
            return
        for i, (step, job, place) in enumerate(zip(steps, jobs, places)):
            click.echo(f"== {step.label} → {place}")
            click.echo(describe(plans[i], o.threads) if i in plans else
                       f"method: {job.method}; reads {', '.join(step.needs)}, so it is planned once they are merged")
        return
    reports = []
    for i, (step, job, place) in enumerate(zip(steps, jobs, places)):
        for warning in job.warnings:
            log(f"warning: {step.label}: {warning}")
        plan = plans.get(i) or run(lambda j=job: prepare(j))
        report = run(lambda p=plan, t=place: execute(p, t, overwrite=o.overwrite, threads=o.threads,
                                                     memory_budget=o.memory_budget, progress=not o.quiet,
                                                     model_card_file=o.model_card))
        reports.append({"name": step.name, **report.to_dict()})
        if not o.as_json:
            click.echo(f"{step.label}: {summary(job, plan, report)}")
    if o.as_json:
        emit_json({"merges": reports})
