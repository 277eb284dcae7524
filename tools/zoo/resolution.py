"""The side, in pixels, at which the zoo's sources draw their images: 32 unless a build or cache asks for more.

Every drawn source (glyphs, emoji, icons, texture crops) resizes to ``source_pixels()``. Building or preparing a cache
at an ``image_size`` above 32 draws at that size inside ``drawn_at``, so a larger tower sees detail and not a 32-pixel
image scaled up. MNIST, Fashion-MNIST and 8×8 digits keep their own resolution whatever the setting.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

DEFAULT_PIXELS = 32
_PIXELS: ContextVar[int] = ContextVar("source_pixels", default=DEFAULT_PIXELS)


def source_pixels() -> int:
    """The side of every drawn source image."""
    return _PIXELS.get()


@contextmanager
def drawn_at(image_size: int) -> Iterator[None]:
    """Draw sources at ``image_size`` pixels (at least 32) inside the block."""
    token = _PIXELS.set(max(DEFAULT_PIXELS, image_size))
    try:
        yield
    finally:
        _PIXELS.reset(token)
