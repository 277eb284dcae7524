"""The zoo's font tasks: capital letters across Latin fonts, which writing system a letter is in, and which kind of
symbol (arrow, braille, domino, ...) a glyph of Unicode's symbol blocks is.

Lower-case letters, digits and the serif cuts of the scripts are kept for the pretraining corpus (``corpus.py``), so
no glyph image is in both.
"""

from __future__ import annotations

import random

from PIL import Image

from merge_rs.clip.tasks import CAPITALS, SCRIPTS, SYMBOLS

from .fonts import latin_fonts, render, script_fonts, script_letters, symbol_fonts

LETTER_IMAGES = 5200  # two renderings of each capital in each font
SCRIPT_IMAGES_PER_CLASS = 440
SYMBOL_IMAGES_PER_CLASS = 500


def letters() -> tuple[list[Image.Image], list[int]]:
    rng = random.Random(2)
    fonts = latin_fonts()
    images, labels = [], []
    for i in range(LETTER_IMAGES):
        label = i % len(CAPITALS)
        font = fonts[(i // len(CAPITALS)) % len(fonts)]
        images.append(render(CAPITALS[label], font, rng))
        labels.append(label)
    return images, labels


def script_sample(script: str, style: str, rng: random.Random) -> Image.Image:
    """A random letter of ``script`` in one of its Noto fonts of ``style``."""
    font = rng.choice(script_fonts(script, style))
    return render(rng.choice(script_letters(script, font)), font, rng)


def scripts() -> tuple[list[Image.Image], list[int]]:
    rng = random.Random(3)
    images, labels = [], []
    for label, script in enumerate(SCRIPTS):
        for _ in range(SCRIPT_IMAGES_PER_CLASS):
            images.append(script_sample(script, "Sans", rng))
            labels.append(label)
    return images, labels


def symbols() -> tuple[list[Image.Image], list[int]]:
    """Per kind of symbol, random symbols of it, each in a random font that draws it."""
    rng = random.Random(4)
    images, labels = [], []
    for label, kind in enumerate(SYMBOLS):
        fonts = symbol_fonts(kind)
        for _ in range(SYMBOL_IMAGES_PER_CLASS):
            font, glyphs = rng.choice(fonts)
            images.append(render(rng.choice(glyphs), font, rng))
            labels.append(label)
    return images, labels
