"""Run many settings from one cache, several at a time (one process each), and keep each one's results.

A grid file is JSON: ``{"base": {SETTING: VALUE, ...}, "runs": [{"name": NAME, "set": {SETTING: VALUE, ...}}, ...]}``.
Each run is the base with its own overrides, so every lever is measured against the same baseline. Results go to
``OUT/NAME.json`` and logs to ``OUT/NAME.log``; a run whose results already hold every stage is skipped.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

from ..settings import ZooSettings

LAST_STAGE = "adamerging"


def read_grid(path: Path) -> list[tuple[str, ZooSettings]]:
    grid = json.loads(path.read_text())
    base = ZooSettings().with_overrides(grid.get("base", {}))
    names = [run["name"] for run in grid["runs"]]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names repeat")
    return [(run["name"], base.with_overrides(run.get("set", {}))) for run in grid["runs"]]


def _done(out: Path) -> bool:
    try:
        return LAST_STAGE in json.loads(out.read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        return False


def _worker(job: tuple[Path, str, ZooSettings, Path, str, int]) -> str:
    cache, name, settings, out_dir, device, threads = job
    import torch

    from .run import run_one

    torch.set_num_threads(threads)
    with open(out_dir / f"{name}.log", "a", buffering=1) as log_file:
        def log(line: str) -> None:
            print(line, file=log_file)

        try:
            run_one(cache, settings, name, out_dir / f"{name}.json", device, log)
        except Exception as error:  # one failed setting must not stop the others
            log(f"FAILED: {type(error).__name__}: {error}")
            return f"{name}: failed ({error})"
    return f"{name}: done"


def run_grid(cache: Path, grid: Path, out_dir: Path, device: str, workers: int, threads: int) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[Any] = [(cache, name, settings, out_dir, device, threads) for name, settings in read_grid(grid)
                       if not _done(out_dir / f"{name}.json")]
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        outcomes = []
        for outcome in pool.imap_unordered(_worker, jobs):
            print(outcome, flush=True)
            outcomes.append(outcome)
    return outcomes
