"""Writing outputs safely, for the code that writes them in Python (RegMean's model, Fisher checkpoints, JSON
reports): the engine's checks (never an input, never inside one; an existing directory is replaced only with
``overwrite`` and only if merge-rs wrote it), a temporary sibling, and an atomic move into place."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

from . import _core

PathLike = Union[str, "os.PathLike[str]"]


@contextmanager
def atomic_output(target: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory to write into; on success it replaces ``target`` atomically, on any error
    (or Ctrl-C) it is removed with the parent directories created for it."""
    output = _core.OutputDir(os.fspath(target), [os.fspath(p) for p in inputs], overwrite)
    try:
        yield Path(output.path)
    except BaseException:
        output.abort()
        raise
    output.commit()


def check_output(target: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> None:
    """Fail now, before any work, if ``target`` could not be written at the end (nothing is created)."""
    _core.check_output(os.fspath(target), [os.fspath(p) for p in inputs], overwrite)


def write_report(path: PathLike, data: Any, inputs: Iterable[PathLike] = ()) -> None:
    """Write ``data`` as JSON to ``path`` (replacing a previous file, never an input or a file inside one,
    never a directory), through a temporary sibling and an atomic rename."""
    path = Path(path)
    _core.check_not_input(os.fspath(path), [os.fspath(p) for p in inputs])
    if path.exists() and not path.is_file():
        raise IsADirectoryError(f"{path}: the report must be a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.merge-rs-{os.getpid()}")
    try:
        temp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
