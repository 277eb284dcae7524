"""The one protocol every learned method follows: what it is called, its options (from which the CLI command is
generated), the rows it adds to the demo, and how to run it on a model pool. The CLI and the demo drive every
learned method through this."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..clip.pool import ModelPool
    from .result import LearnedMerge


@dataclass(frozen=True)
class Option:
    """One option of a learned method: ``name`` is its keyword; ``kind`` is float, int, bool, choice, path,
    output (a path merge-rs writes) or floats (comma-separated on the command line)."""

    name: str
    kind: str
    default: Any
    help: str
    flag: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class RunContext:
    """What every learned method is run with, besides its own options."""

    device: str = "auto"
    threads: int = 0
    overwrite: bool = False
    progress: bool = True
    log: Callable[[str], None] = lambda _: None


@dataclass(frozen=True)
class LearnedMethod:
    """A learned merging method. ``run(pool, out, context, **options)`` learns or computes what it needs on the
    pool's tasks and writes the merged model to ``out``; ``demo_rows`` maps each row it adds to the demo to the
    options of that row; ``uses_engine`` says whether its merge runs in the engine (so ``--threads`` applies)."""

    name: str
    summary: str
    options: tuple[Option, ...]
    run: Callable[..., LearnedMerge]
    demo_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    uses_engine: bool = True

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def __call__(self, pool: ModelPool, out: Path, context: RunContext, **options: Any) -> LearnedMerge:
        unknown = sorted(set(options) - {o.name for o in self.options})
        if unknown:
            raise ValueError(f"{self.name} does not take {', '.join(unknown)}")
        return self.run(pool, out, context, **{**self.defaults(), **options})
