"""Image fingerprints that show the pretraining corpus and the task splits share no image.

An image's fingerprint is a hash of its pixels in one canonical form (RGB, 32×32, bilinear), so the same picture
gets the same fingerprint whether it was rendered at 32×32 or stored as PNG in a parquet file.
"""

from __future__ import annotations

import hashlib

from PIL import Image

HASH_FILE = "pretraining-hashes.txt"


def fingerprint(image: Image.Image) -> str:
    pixels = image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR).tobytes()
    return hashlib.sha256(pixels).hexdigest()[:20]


def distinct(images: list[Image.Image], labels: list[int], groups: list[str] | None = None
             ) -> tuple[list[Image.Image], list[int], list[str] | None]:
    """A source less its exact repeats (the first of each kept), so that no picture lands in two splits: a few
    sources render some items identically (emoji that differ only in a code point, icons shared by two themes).
    ``groups``, when the source gives them, are filtered alike."""
    seen: set[str] = set()
    keep = []
    for i, image in enumerate(images):
        key = fingerprint(image)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return [images[i] for i in keep], [labels[i] for i in keep], None if groups is None else [groups[i] for i in keep]
