"""YAML from files and the command line, bounded: a recipe is read only from a regular file of at most 1 MB, and
its document may nest at most 64 deep and expand (aliases counted each time they are used) to at most 100,000
nodes. A billion-laughs alias bomb, a cyclic anchor or a 2,000-deep ``[[[[`` is a one-line error, not hours of
work, gigabytes of memory or a RecursionError."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import InvalidArgumentError

MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000


def read_recipe_text(path: Path) -> str:
    """The text of the recipe file at ``path``: a regular file (not a FIFO or /dev/zero) of at most 1 MB."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InvalidArgumentError(f"{path}: a recipe must be a regular file")
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise InvalidArgumentError(f"{path}: cannot read the recipe: {e.strerror or e}") from None
    if len(raw) > MAX_BYTES:
        raise InvalidArgumentError(f"{path}: a recipe is at most {MAX_BYTES // (1 << 20)} MB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgumentError(f"{path}: the recipe is not UTF-8 text (byte {e.start})") from None


def compose(text: str, where: str) -> yaml.Node | None:
    """The YAML node graph of ``text`` after checking its depth and its size with aliases expanded."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise InvalidArgumentError(f"{where}: the YAML nests more than {MAX_DEPTH} deep") from None
    _check_size([node] if node is not None else [], where)
    return node


def load(text: str, where: str) -> tuple[yaml.Node | None, Any]:
    """The node graph (for line numbers) and the data of ``text``, within the bounds."""
    node = compose(text, where)
    return node, None if node is None else yaml.SafeLoader(text).construct_document(node)


def load_all(text: str, where: str) -> list[tuple[yaml.Node, Any]]:
    """Each document of ``text`` (a stream of ``---``-separated documents) as its node graph and its data, the
    bounds holding for all documents together."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except RecursionError:
        raise InvalidArgumentError(f"{where}: the YAML nests more than {MAX_DEPTH} deep") from None
    _check_size(nodes, where)
    return [(node, yaml.SafeLoader(text).construct_document(node)) for node in nodes if node is not None]


def safe_load(text: str, where: str) -> Any:
    """``yaml.safe_load`` of ``text``, within the bounds (``where`` names the source in errors)."""
    return load(text, where)[1]


def _check_size(roots: list[yaml.Node], where: str) -> None:
    stack: list[tuple[yaml.Node, int]] = [(root, 1) for root in roots if root is not None]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise InvalidArgumentError(f"{where}: the YAML expands to more than {MAX_NODES:,} values "
                                       "(aliases of aliases?)")
        if depth > MAX_DEPTH:
            raise InvalidArgumentError(f"{where}: the YAML nests more than {MAX_DEPTH} deep (a cyclic alias?)")
        if isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
