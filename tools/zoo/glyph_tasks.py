"""The zoo's two font tasks: capital letters across Latin fonts, and which writing system a few letters are in.

Lower-case letters, digits and the serif cuts of the scripts are kept for the pretraining corpus (``corpus.py``), so
no glyph image is in both.
"""

from __future__ import annotations

import random

from PIL import Image

from merge_rs.clip.tasks import CAPITALS, SCRIPTS

from .fonts import latin_fonts, render, script_fonts, script_letters

LETTER_IMAGES = 5200  # two renderings of each capital in each font
SCRIPT_IMAGES_PER_CLASS = 440


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
