"""Writing outputs safely, for the code that writes them in Python (RegMean's model, Fisher checkpoints, JSON
reports, CSVs, plots): the engine's checks (never an input, never inside one, never inside the zoo; an existing
directory or file is replaced only if merge-rs wrote it, or with ``overwrite`` for a file), a temporary sibling,
and an atomic move into place. Every file carries merge-rs's mark, so re-running a command replaces its own
outputs and nothing else."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

from . import _core

PathLike = Union[str, "os.PathLike[str]"]


@contextmanager
def atomic_output(target: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory to write into; on success it replaces ``target`` atomically, on any error
    (or Ctrl-C) it is removed with the parent directories created for it."""
    output = _core.OutputDir(os.fspath(target), [*(os.fspath(p) for p in inputs), *protected()], overwrite)
    try:
        yield Path(output.path)
    except BaseException:
        output.abort()
        raise
    output.commit()


def check_output(target: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> None:
    """Fail now, before any work, if ``target`` could not be written at the end (nothing is created)."""
    _core.check_output(os.fspath(target), [*(os.fspath(p) for p in inputs), *protected()], overwrite)


def generator() -> str:
    """What every file merge-rs writes says about who wrote it (a JSON field, a CSV corner cell, a PNG tag)."""
    return f"merge-rs {_core.__version__}"


def protected() -> list[str]:
    """Directories no output may touch whatever the command's inputs are: the shipped zoo."""
    from importlib import resources

    return [os.fspath(Path(str(resources.files("merge_rs") / "zoo" / "data")))]


def written_by_merge_rs(path: Path) -> bool:
    """Whether the file at ``path`` carries merge-rs's mark (read from its first 64 KiB)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    mark = generator().split()[0].encode()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"tEXtSoftware\x00" + mark in head
    if head.lstrip().startswith(b"{"):
        return re.match(rb'\s*\{\s*"generator":\s*"' + mark, head) is not None
    return head.startswith(mark)  # CSV: the corner cell


def check_file_output(path: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> None:
    """Fail now, before any work, unless merge-rs may write the file ``path``: it is not an input, inside one or
    inside the zoo; it is not a directory or a link; and if it exists, merge-rs wrote it (or ``overwrite``)."""
    from .exceptions import InvalidArgumentError, OutputExistsError

    path = Path(path)
    _core.check_not_input(os.fspath(path), [*(os.fspath(p) for p in inputs), *protected()])
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        _check_can_create(path)
        return
    except OSError as e:
        raise InvalidArgumentError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a link" if stat.S_ISLNK(mode) else "not a regular file"
        raise InvalidArgumentError(f"{path}: it is {kind}; merge-rs writes this output as a file")
    if not overwrite and not written_by_merge_rs(path):
        raise OutputExistsError(f"{path} exists and merge-rs did not write it; remove it, choose another path, "
                                "or pass --overwrite to replace it")


def _check_can_create(path: Path) -> None:
    """The nearest existing directory above ``path`` is one where this process may create entries."""
    from .exceptions import InvalidArgumentError

    parent = path.absolute().parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidArgumentError(f"{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{path}: {parent} is not writable")


def write_file_output(path: PathLike, payload: bytes | Callable[[Path], None], inputs: Iterable[PathLike] = (),
                      overwrite: bool = False) -> None:
    """Write ``payload`` (bytes, or a function that writes the given temporary path) to ``path`` through a
    temporary sibling and an atomic rename, after ``check_file_output``."""
    path = Path(path)
    inputs = list(inputs)
    check_file_output(path, inputs, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.merge-rs-{os.getpid()}{path.suffix}")
    try:
        if callable(payload):
            payload(temp)
        else:
            temp.write_bytes(payload)
        check_file_output(path, inputs, overwrite)  # nothing else appeared there meanwhile
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_report(path: PathLike, data: Any, inputs: Iterable[PathLike] = (), overwrite: bool = False) -> None:
    """Write ``data`` as JSON to ``path``, marked with a leading ``generator`` field, under the file policy."""
    marked = {"generator": generator(), **{k: v for k, v in data.items() if k != "generator"}}
    write_file_output(path, (json.dumps(marked, indent=2) + "\n").encode(), inputs, overwrite)
