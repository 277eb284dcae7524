"""Exceptions raised by merge-rs. The classes are created once by the engine (``merge_rs._core``) and
re-exported here; missing input files raise the built-in ``FileNotFoundError``.

``MergeRsError`` is the base of all; ``InvalidArgumentError`` and ``NonFiniteError`` are also ``ValueError``s,
``OutputExistsError`` a ``FileExistsError``, ``MergeIOError`` an ``OSError``; ``InternalError`` means a bug.
"""

from __future__ import annotations

from ._core import (
    CheckpointError,
    IncompatibleModelsError,
    InternalError,
    InvalidArgumentError,
    MergeCancelled,
    MergeIOError,
    MergeRsError,
    NonFiniteError,
    OutputExistsError,
    OutputIsInputError,
)

__all__ = [
    "MergeRsError",
    "CheckpointError",
    "IncompatibleModelsError",
    "InvalidArgumentError",
    "NonFiniteError",
    "OutputExistsError",
    "OutputIsInputError",
    "MergeIOError",
    "MergeCancelled",
    "InternalError",
]
