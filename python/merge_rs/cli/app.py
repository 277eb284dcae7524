"""The ``merge-rs`` click group and what every command shares: one-line errors with a non-zero exit, JSON on
stdout, logs on stderr."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

import click

from ..exceptions import MergeRsError
from ..text import printable

T = TypeVar("T")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: the work stops and removes what it had not finished."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="merge-rs", prog_name="merge-rs")
def main() -> None:
    """Merge fine-tuned models (task vectors) from safetensors checkpoints, streaming, in bounded memory."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)


def fail(error: BaseException) -> NoReturn:
    """Print ``error`` as one line (control characters from user input, such as a newline or ESC, escaped) and
    exit with 1."""
    click.echo("error: " + printable(str(error) or type(error).__name__), err=True)
    sys.exit(1)


def run(work: Callable[[], T]) -> T:
    """``work()``, with merge-rs, OS and value errors turned into one-line failures."""
    try:
        return work()
    except (MergeRsError, OSError, ValueError) as e:
        fail(e)
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        click.echo(f"error: interrupted by {signal.Signals(signum).name}; nothing unfinished was left behind",
                   err=True)
        sys.exit(128 + signum)


def main_process() -> bool:
    """False on every rank but 0 of a torch.distributed launch (they print and write nothing)."""
    return int(os.environ.get("RANK", "0")) == 0


def emit_json(data: Any) -> None:
    if main_process():
        emit(json.dumps(data, indent=2))


def emit(text: str) -> None:
    """Print ``text`` on stdout; a stdout that cannot take it (a full disk, a closed pipe) is a one-line error."""
    try:
        click.echo(text)
        sys.stdout.flush()
    except OSError as e:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        fail(OSError(f"cannot write to standard output: {e.strerror or e}"))


def logger(quiet: bool) -> Callable[[str], None]:
    """Log lines to stderr, or nothing with ``--quiet``."""
    return (lambda _: None) if quiet else (lambda m: click.echo(m, err=True))


def float_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """A click callback reading comma-separated numbers."""
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, one per model, got '{value}'") from None


def float_or_list(ctx: click.Context, param: click.Parameter, value: str | None) -> float | list[float] | None:
    """A click callback reading one number, or comma-separated numbers (one per model)."""
    numbers = float_list(ctx, param, value)
    if numbers is not None and "," not in (value or ""):
        return numbers[0] if numbers else None
    return numbers


def name_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """A click callback reading comma-separated tensor names."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def apply(command: Callable[..., Any], options: list[Callable[[Any], Any]]) -> Callable[..., Any]:
    """Decorate ``command`` with ``options`` in the order given (the first appears first in ``--help``)."""
    for option in reversed(options):
        command = option(command)
    return command


# Every option that names something merge-rs writes takes this type (tests find the outputs by it).
OUTPUT_PATH = click.Path(path_type=Path, writable=True)
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress or log lines.")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
THREADS = click.option("--threads", type=click.IntRange(min=0), default=0, help="Worker threads (0: one per core).")
PLOT = click.option("--plot", "plot_path", type=OUTPUT_PATH, help="Also draw the result as a PNG "
                                                                              "(needs the plot extra: matplotlib).")
OVERWRITE_FILES = click.option("--overwrite", is_flag=True, help="Replace existing report, plot or CSV files even "
                                                                 "if merge-rs did not write them.")
POOL = click.option("--pool", "pool_name", help="Model pool: a preset (zoo, clip-vit-base-patch32_TA8, ...) or a "
                                                "JSON file.")
