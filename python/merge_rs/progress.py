"""Progress bars on stderr for long engine work: one bar per phase, off when quiet or not a terminal."""

from __future__ import annotations

import sys
from typing import Any, Callable, TypeVar

ProgressCallback = Callable[[str, int, int], None]
T = TypeVar("T")


class ProgressBar:
    """A callable ``(phase, done_bytes, total_bytes)`` that drives a tqdm bar per phase."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._phase: str | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self.close()
            from tqdm import tqdm

            self._phase = phase
            self._bar = tqdm(
                total=total, desc=phase, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False
            )
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_callback(enabled: bool | ProgressCallback | None) -> ProgressCallback | None:
    """Resolve the ``progress`` argument: a callable as is, ``True`` for a bar when stderr is a terminal."""
    if callable(enabled):
        return enabled
    if enabled and sys.stderr.isatty():
        return ProgressBar()
    return None


def with_progress(enabled: bool | ProgressCallback | None, call: Callable[[ProgressCallback | None], T]) -> T:
    """``call(callback)`` with the ``progress`` argument resolved, the bar closed afterwards whatever happens."""
    callback = progress_callback(enabled)
    try:
        return call(callback)
    finally:
        if isinstance(callback, ProgressBar):
            callback.close()
