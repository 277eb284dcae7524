"""The ``merge-rs`` command line: a thin click layer over the Python API, one module per command group. Results
go to stdout (``--json`` for machines), progress and logs to stderr; errors are one line and a non-zero exit.
The merge, info and method paths import no torch; the evaluating commands import it when they run."""

from . import demo, evaluate, inspect, learned, lora, merge, recipe, sweep
from .app import main

__all__ = ["main", "demo", "evaluate", "inspect", "learned", "lora", "merge", "recipe", "sweep"]
