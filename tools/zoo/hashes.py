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
