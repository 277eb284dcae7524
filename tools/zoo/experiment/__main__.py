"""``python -m tools.zoo.experiment {prepare,run,grid,report,probe}``: see the package's docstring."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import ZooSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.zoo.experiment", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="render the splits, corpus and slices into a cache directory")
    prep.add_argument("cache", type=Path)
    prep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a split setting")
    one = commands.add_parser("run", help="train and measure one setting")
    one.add_argument("cache", type=Path)
    one.add_argument("--name", required=True)
    one.add_argument("--out", type=Path, required=True, help="results directory")
    one.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    one.add_argument("--device", default="cpu")
    one.add_argument("--threads", type=int, default=2)
    many = commands.add_parser("grid", help="run every setting of a grid file, several at a time")
    many.add_argument("cache", type=Path)
    many.add_argument("grid", type=Path)
    many.add_argument("--out", type=Path, required=True)
    many.add_argument("--device", default="cpu")
    many.add_argument("--workers", type=int, default=1)
    many.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    rep = commands.add_parser("report", help="tables and pictures from a results directory")
    rep.add_argument("results", type=Path, nargs="+")
    rep.add_argument("--table", type=Path, help="write the markdown tables here")
    rep.add_argument("--plots", type=Path, help="write the PNG pictures into this directory")
    rep.add_argument("--detail", default="base (cpu)", help="the run whose curves and cross matrix are shown")
    look = commands.add_parser("probe", help="fine-tune a built zoo's pretrained model on one task, no anchor")
    look.add_argument("zoo", type=Path, help="a built zoo (python/merge_rs/zoo/data or a build's output)")
    look.add_argument("--task", required=True)
    look.add_argument("--out", type=Path, required=True, help="result JSON file")
    look.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. finetune_steps=2500")
    look.add_argument("--test-size", type=int, default=1000)
    look.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    if args.command == "prepare":
        from .cache import prepare

        prepare(args.cache, _settings(args.set))
    elif args.command == "run":
        import torch

        from .run import run_one

        torch.set_num_threads(args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        run_one(args.cache, _settings(args.set), args.name,
                args.out / f"{args.name}.json", args.device)
    elif args.command == "grid":
        from .grid import run_grid

        run_grid(args.cache, args.grid, args.out, args.device, args.workers, args.threads)
    elif args.command == "probe":
        import torch

        from .probe import probe_task

        torch.set_num_threads(args.threads)
        probe_task(args.zoo, args.task, _settings(args.set), args.out, args.test_size)
    else:
        from .report import write_report

        write_report(args.results, args.table, args.plots, args.detail)


def _settings(pairs: list[str]) -> ZooSettings:
    try:
        return ZooSettings().with_pairs(pairs)
    except ValueError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
