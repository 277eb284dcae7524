"""In-domain pretraining slices: a part of each task's own source that is in none of its splits, captioned the way a
web corpus would caption it.

Real CLIP saw digits, clothes and textures on the web before anyone fine-tuned it on MNIST. The zoo's pretraining
corpus can do the same without leaking a test image: each task's source gives up a slice (1,500 images or a quarter
of the source, whichever is smaller) that no split holds. A slice image is captioned with its class's prompts with
probability ``class_caption_share`` (decided once per image, seeded), and otherwise with its domain's captions
("a handwritten digit.", "a photo of clothing.", …), which name no class.
"""

from __future__ import annotations

import random

# Captions that say what kind of image it is, never which class.
DOMAIN_CAPTIONS: dict[str, tuple[str, ...]] = {
    "mnist": ("a handwritten digit.", "a scanned handwritten number.", "a digit written by hand."),
    "digits": ("a tiny blurry digit.", "a low resolution handwritten number.", "an 8 by 8 pixel digit."),
    "fashion_mnist": ("a photo of clothing.", "a small grey photo of a fashion article.", "a product photo."),
    "emoji": ("an emoji.", "a colourful emoji.", "a small emoji picture."),
    "icons": ("a desktop icon.", "an icon from a desktop theme.", "a small computer icon."),
    "textures": ("a texture.", "a close up photo of a material.", "a patterned surface."),
    "letters": ("a capital letter.", "an uppercase letter in some font.", "a letter of the alphabet."),
    "scripts": ("some letters of a writing system.", "a character of some script.", "a glyph of a foreign script."),
    "symbols": ("a symbol.", "a special character from a symbol font.", "a unicode sign."),
    "units": ("a unit of a strategy game.", "a sprite from a fantasy game.", "a small pixel art character."),
}


def slice_size(source_size: int, wanted: int) -> int:
    """At most ``wanted`` images and at most a quarter of the source."""
    return min(wanted, source_size // 4)


def slice_captions(task: str, labels: list[int], prompts: list[tuple[str, ...]], share: float,
                   seed: int) -> list[tuple[str, ...]]:
    """One caption set per slice image: ``prompts[label]`` with probability ``share``, else the domain captions."""
    rng = random.Random(f"{seed}:slice-captions:{task}")
    domain = DOMAIN_CAPTIONS[task]
    return [prompts[label] if rng.random() < share else domain for label in labels]
