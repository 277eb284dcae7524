"""Glyphs of real fonts from Debian's font packages, rendered as small grayscale images.

Latin fonts (for letters and digits) come from ``fonts-noto-core``, ``fonts-dejavu-core``, ``fonts-liberation``,
``fonts-freefont-ttf``, ``fonts-urw-base35`` and ``fonts-cantarell``; the writing systems come from Noto's per-script
fonts (``NotoSans{Script}`` for the task, ``NotoSerif{Script}`` for the pretraining corpus); the symbols from every
DejaVu, FreeFont, Noto symbol or URW font that draws a third of a kind's. A font is used for a character only if its
character map has it, so no image is a "tofu" box.
"""

from __future__ import annotations

import random
import unicodedata
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from merge_rs.clip.tasks import SCRIPTS, SYMBOLS

from .missing import SourceMissing
from .resolution import source_pixels

FONT_ROOT = Path("/usr/share/fonts")
LATIN_GLOBS = ("truetype/noto/NotoSans-*.ttf", "truetype/noto/NotoSerif-*.ttf", "truetype/noto/NotoSansMono-*.ttf",
               "truetype/dejavu/*.ttf", "truetype/liberation/*.ttf", "truetype/freefont/*.ttf",
               "opentype/urw-base35/*.otf", "opentype/cantarell/*.otf")
NOT_TEXT = ("D050000L", "StandardSymbols")  # dingbats and symbol fonts: no letters
CANVAS = 192

# Writing system → (Unicode block, the Noto family word).
SCRIPT_BLOCKS: dict[str, tuple[tuple[int, int], str]] = {
    "arabic": ((0x0600, 0x06FF), "Arabic"),
    "hebrew": ((0x0590, 0x05FF), "Hebrew"),
    "devanagari": ((0x0900, 0x097F), "Devanagari"),
    "thai": ((0x0E00, 0x0E7F), "Thai"),
    "armenian": ((0x0530, 0x058F), "Armenian"),
    "georgian": ((0x10A0, 0x10FF), "Georgian"),
    "ethiopic": ((0x1200, 0x137F), "Ethiopic"),
    "bengali": ((0x0980, 0x09FF), "Bengali"),
    "tamil": ((0x0B80, 0x0BFF), "Tamil"),
    "khmer": ((0x1780, 0x17FF), "Khmer"),
    "sinhala": ((0x0D80, 0x0DFF), "Sinhala"),
    "myanmar": ((0x1000, 0x109F), "Myanmar"),
}
assert tuple(SCRIPT_BLOCKS) == SCRIPTS, "the task's class order"

# Kind of symbol → its Unicode ranges (dingbats less their numbers and arrows), drawn in every font that has a third.
SYMBOL_BLOCKS: dict[str, tuple[tuple[int, int], ...]] = {
    "arrow": ((0x2190, 0x21FF), (0x27F0, 0x27FF), (0x2900, 0x297F)),
    "mathematical operator": ((0x2200, 0x22FF),),
    "box drawing": ((0x2500, 0x257F),),
    "braille pattern": ((0x2801, 0x28FF),),
    "geometric shape": ((0x25A0, 0x25FF),),
    "dingbat": ((0x2701, 0x2775),),
    "hexagram": ((0x4DC0, 0x4DFF),),
    "domino tile": ((0x1F030, 0x1F093),),
    "playing card": ((0x1F0A0, 0x1F0F5),),
    "chess piece": ((0x2654, 0x265F),),
}
assert tuple(SYMBOL_BLOCKS) == SYMBOLS, "the task's class order"
# Symbola is left out: its emoji glyphs are in the pretraining corpus.
SYMBOL_GLOBS = ("truetype/dejavu/*.ttf", "truetype/freefont/*.ttf", "truetype/noto/NotoSansSymbols*.ttf",
                "truetype/noto/NotoSansMath-*.ttf", "opentype/urw-base35/*.otf")


def latin_fonts() -> list[Path]:
    """Every installed Latin text font that has all of A–Z, a–z and 0–9, in a fixed order."""
    found = sorted({p for pattern in LATIN_GLOBS for p in FONT_ROOT.glob(pattern)
                    if not p.name.startswith(NOT_TEXT)})
    needed = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    fonts = [p for p in found if set(map(ord, needed)) <= character_map(p)]
    if len(fonts) < 20:
        raise SourceMissing("fewer than 20 Latin fonts found: install fonts-noto-core fonts-dejavu-core "
                            "fonts-liberation fonts-freefont-ttf fonts-urw-base35 fonts-cantarell")
    return fonts


def script_fonts(script: str, style: str) -> list[Path]:
    """The Noto fonts (``style`` "Sans" or "Serif", every weight) that write ``script``."""
    family = SCRIPT_BLOCKS[script][1]
    found = sorted((FONT_ROOT / "truetype/noto").glob(f"Noto{style}{family}-*.ttf"))
    if not found:
        raise SourceMissing(f"no Noto{style}{family} font: install fonts-noto-core")
    return found


@lru_cache(maxsize=None)
def character_map(path: Path) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


@lru_cache(maxsize=None)
def script_letters(script: str, path: Path) -> tuple[str, ...]:
    """The letters (Unicode category L*) of ``script``'s block that the font at ``path`` draws."""
    low, high = SCRIPT_BLOCKS[script][0]
    have = character_map(path)
    return tuple(chr(c) for c in range(low, high + 1) if c in have and unicodedata.category(chr(c)).startswith("L"))


def _symbol_codes(kind: str) -> list[int]:
    return [c for low, high in SYMBOL_BLOCKS[kind] for c in range(low, high + 1)
            if unicodedata.category(chr(c)) != "Cn"]


@lru_cache(maxsize=None)
def symbol_fonts(kind: str) -> tuple[tuple[Path, tuple[str, ...]], ...]:
    """The fonts that draw at least a third of ``kind``'s symbols, each with the symbols it draws."""
    codes = _symbol_codes(kind)
    found = sorted({p for pattern in SYMBOL_GLOBS for p in FONT_ROOT.glob(pattern)})
    out = []
    for path in found:
        have = [chr(c) for c in codes if c in character_map(path)]
        if 3 * len(have) >= len(codes):
            out.append((path, tuple(have)))
    if not out:
        raise SourceMissing(f"no font draws the {kind} symbols: install fonts-dejavu-core fonts-freefont-ttf "
                            "fonts-noto-core fonts-urw-base35")
    return tuple(out)


@lru_cache(maxsize=256)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def render(text: str, path: Path, rng: random.Random, invert: bool = False) -> Image.Image:
    """``text`` in the font at ``path``: random size, slight rotation and offset, black on white (or inverted)."""
    size = rng.randint(40, 56) if len(text) == 1 else rng.randint(26, 36)
    canvas = Image.new("L", (CANVAS, CANVAS), 255)
    ImageDraw.Draw(canvas).text((CANVAS // 2, CANVAS // 2), text, font=_font(path, size), fill=0, anchor="mm")
    canvas = canvas.rotate(rng.uniform(-10, 10), resample=Image.Resampling.BILINEAR, fillcolor=255)
    box = canvas.point(lambda v: 255 if v < 200 else 0).getbbox() or (80, 80, 112, 112)
    side = int(max(box[2] - box[0], box[3] - box[1]) * rng.uniform(1.15, 1.4)) + 2
    cx = (box[0] + box[2]) // 2 + rng.randint(-2, 2)
    cy = (box[1] + box[3]) // 2 + rng.randint(-2, 2)
    crop = canvas.crop((cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side))
    image = crop.resize((source_pixels(), source_pixels()), Image.Resampling.LANCZOS)
    return image.point(lambda v: 255 - v) if invert else image
