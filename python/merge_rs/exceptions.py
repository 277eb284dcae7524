"""Exceptions raised by merge-rs. Missing input files raise the built-in ``FileNotFoundError``."""

from __future__ import annotations

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
]


class MergeRsError(Exception):
    """Base class of every merge-rs error."""


class CheckpointError(MergeRsError):
    """A file is not a valid safetensors checkpoint, or holds a dtype that cannot be merged."""


class IncompatibleModelsError(MergeRsError):
    """The models cannot be matched tensor by tensor (missing tensor, shape or dtype mismatch)."""


class InvalidArgumentError(MergeRsError, ValueError):
    """A method parameter or option is invalid."""


class NonFiniteError(MergeRsError, ValueError):
    """A parameter holds NaN or Inf (pass ``allow_nonfinite=True`` to merge anyway)."""


class OutputExistsError(MergeRsError, FileExistsError):
    """The output directory exists (pass ``overwrite=True`` to replace it)."""


class OutputIsInputError(InvalidArgumentError):
    """The output would overwrite, contain or sit inside one of the inputs."""


class MergeIOError(MergeRsError, OSError):
    """Reading or writing a file failed."""


class MergeCancelled(MergeRsError):
    """The work was cancelled; no output was left behind."""
