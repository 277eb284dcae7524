"""The captioned corpus the zoo's CLIP is pretrained on. It shares no image with any task.

Like CLIP's web corpus, it is other images with their own captions, related to the tasks but never drawn from them:

| part      | images                                            | captions from                              |
| --------- | ------------------------------------------------- | ------------------------------------------ |
| digits    | 0–9 in every Latin font, half of them inverted    | the digit and the font's family            |
| lowercase | a–z in every Latin font (the task has capitals)   | the letter and the font's family           |
| emoji     | Symbola's black-and-white emoji glyphs            | the emoji's name and group (emoji-test.txt) |
| icons     | Tango's and GNOME's icons (the task: four others) | the icon's file name and context folder    |
| scripts   | Noto Serif letters of 11 scripts (the task: Sans) | the script's name                          |

Nothing stands in for the textures, the fashion photos or the 8×8 digits: zero-shot accuracy on those rests on
what transfers, as it does for real CLIP.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from merge_rs.clip.tasks import ICON_CONTEXTS, SCRIPTS

from .artwork import tango_icons
from .fonts import character_map, latin_fonts, render, script_fonts
from .glyph_tasks import script_sample
from .missing import SourceMissing, require
from .sources import emoji_entries

SYMBOLA = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SCRIPT_SAMPLES = 200

Captioned = list[tuple[Image.Image, tuple[str, ...]]]


def _family(font: Path) -> str:
    return font.stem.split("-")[0]


def font_digits(rng: random.Random) -> Captioned:
    out = []
    for font in latin_fonts():
        for d in range(10):
            for invert in (False, True):
                captions = (f"the number {d}.", f'a photo of the number: "{d}".', f"the digit {DIGIT_WORDS[d]}.",
                            f"a {d} in the {_family(font)} font.")
                out.append((render(str(d), font, rng, invert=invert), captions))
    return out


def font_lowercase(rng: random.Random) -> Captioned:
    out = []
    for font in latin_fonts():
        for c in "abcdefghijklmnopqrstuvwxyz":
            captions = (f"the letter {c}.", f'the letter "{c}".', f"a lowercase {c}.",
                        f"{c} in the {_family(font)} font.")
            out.append((render(c, font, rng), captions))
    return out


def symbola_emoji(rng: random.Random) -> Captioned:
    font = require(SYMBOLA, "fonts-symbola")
    have = character_map(font)
    out = []
    for text, group, name in emoji_entries():
        glyph = text.replace("\ufe0f", "")
        if len(glyph) != 1 or ord(glyph) not in have or group == "component":
            continue
        captions = (f"{name}.", f"an emoji of {name}.", f"{name}, an emoji of {group}.", f"an emoji of {group}.")
        out.append((render(glyph, font, rng), captions))
    return out


def tango(rng: random.Random) -> Captioned:
    out = []
    for image, name, context in tango_icons():
        words = name.replace("-", " ").replace("_", " ")
        kind = ICON_CONTEXTS[context]
        captions = (f"a {kind} icon.", f"an icon of a {kind}.", f"an icon of {words}.", f"{words}, a {kind} icon.")
        out.append((image, captions))
    return out


def serif_scripts(rng: random.Random) -> Captioned:
    out = []
    for script in SCRIPTS:
        try:
            script_fonts(script, "Serif")
        except SourceMissing:  # Noto has no serif Arabic: that script stays unseen
            continue
        for _ in range(SCRIPT_SAMPLES):
            captions = (f"{script} text.", f"text in {script} script.", f"{script} writing.",
                        f"letters of the {script} alphabet.")
            out.append((script_sample(script, "Serif", rng), captions))
    return out


CORPUS_PARTS = {"digits": font_digits, "lowercase": font_lowercase, "emoji": symbola_emoji, "icons": tango,
                "scripts": serif_scripts}


def pretraining_corpus(seed: int) -> dict[str, Captioned]:
    """Every part of the corpus, each rendered with its own seeded generator."""
    return {name: make(random.Random(f"{seed}:{name}")) for name, make in CORPUS_PARTS.items()}
