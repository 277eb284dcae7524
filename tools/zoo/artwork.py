"""Desktop icons and material textures from Debian's artwork packages.

- ``icons``: the 48×48 icons of four themes by four groups of artists (Oxygen, Faenza, elementary-xfce and LXDE's
  nuoveXT2), labelled by their freedesktop context folder.
- ``textures``: random crops of GIMP's seamless patterns (``gimp-data``), labelled by the pattern's folder.
- ``tango_icons``: Tango's 32×32 and GNOME's 48×48 icons (``tango-icon-theme``, ``gnome-icon-theme``), other artists'
  sets, for the pretraining corpus.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from PIL import Image

from merge_rs.clip.tasks import ICON_CONTEXTS, TEXTURES

from .missing import SourceMissing, require
from .resolution import source_pixels

ICONS = Path("/usr/share/icons")
TANGO = ICONS / "Tango/32x32"
GNOME = ICONS / "gnome/48x48"
GIMP_PATTERNS = Path("/usr/share/gimp/2.0/patterns")
ICON_FOLDERS = ("actions", "apps", "devices", "mimetypes", "places", "status")  # ICON_CONTEXTS, in order
# (Debian package, the folder of a context's 48×48 icons, with {context} for the context's folder name, and the
# names this theme gives a context where they differ).
ICON_THEMES = (
    ("oxygen-icon-theme", "oxygen/base/48x48/{context}", {}),
    ("faenza-icon-theme", "Faenza/{context}/48", {}),
    ("elementary-xfce-icon-theme", "elementary-xfce/{context}/48", {"mimetypes": "mimes"}),
    ("lxde-icon-theme", "nuoveXT2/48x48/{context}", {}),
)
TEXTURE_FOLDERS = ("Animal", "Fabric", "Food", "Paper", "Plant", "Sky", "Stone", "Water", "Wood")  # TEXTURES
TEXTURE_CROPS = 580  # per kind

assert len(ICON_FOLDERS) == len(ICON_CONTEXTS) and len(TEXTURE_FOLDERS) == len(TEXTURES)


def on_white(image: Image.Image) -> Image.Image:
    """An icon with transparency composited onto white, as RGB."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _icon_files(root: Path, package: str, layout: str = "{context}", renamed: dict[str, str] | None = None
                ) -> list[tuple[Path, int]]:
    """Every icon of the six contexts under ``root``, with its context's index; links (aliases) left out."""
    require(root / layout.split("/")[0].format(context=ICON_FOLDERS[0]), package)
    files = []
    for label, folder in enumerate(ICON_FOLDERS):
        directory = root / layout.format(context=(renamed or {}).get(folder, folder))
        files += [(path, label) for path in sorted(directory.glob("*.png")) if not path.is_symlink()]
    return files


def icons() -> tuple[list[Image.Image], list[int]]:
    images, labels = [], []
    for package, layout, renamed in ICON_THEMES:
        for path, label in _icon_files(ICONS, package, layout, renamed):
            with Image.open(path) as image:
                images.append(on_white(image).resize((source_pixels(), source_pixels()), Image.Resampling.LANCZOS))
            labels.append(label)
    return images, labels


def tango_icons() -> list[tuple[Image.Image, str, int]]:
    """(image, icon name, context index) for every Tango and GNOME icon in the six contexts."""
    out = []
    for path, label in _icon_files(TANGO, "tango-icon-theme") + _icon_files(GNOME, "gnome-icon-theme"):
        with Image.open(path) as image:
            out.append((on_white(image), path.stem, label))
    return out


def read_pattern(path: Path) -> Image.Image:
    """A GIMP ``.pat`` file: a big-endian header (size, version, width, height, bytes per pixel, "GPAT", name),
    then the pixels, row by row."""
    raw = path.read_bytes()
    header_size, _version, width, height, depth, magic = struct.unpack(">IIIII4s", raw[:24])
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(depth)
    if magic != b"GPAT" or mode is None or len(raw) < header_size + width * height * depth:
        raise SourceMissing(f"{path}: not a GIMP pattern file this reader knows")
    image = Image.frombytes(mode, (width, height), raw[header_size: header_size + width * height * depth])
    return image.convert("RGB")


def _crop(pattern: Image.Image, rng: random.Random) -> Image.Image:
    """A random square crop of the pattern tiled 2×2 (it is seamless), turned and mirrored at random."""
    width, height = pattern.size
    tiled = Image.new("RGB", (2 * width, 2 * height))
    for x in (0, width):
        for y in (0, height):
            tiled.paste(pattern, (x, y))
    side = rng.randint(min(16, width, height), min(width, height))
    left, top = rng.randrange(width), rng.randrange(height)
    crop = tiled.crop((left, top, left + side, top + side))
    crop = crop.rotate(90 * rng.randrange(4))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize((source_pixels(), source_pixels()), Image.Resampling.LANCZOS)


def textures() -> tuple[list[Image.Image], list[int]]:
    rng = random.Random(1)
    images, labels = [], []
    for label, folder in enumerate(TEXTURE_FOLDERS):
        patterns = [read_pattern(p) for p in sorted(require(GIMP_PATTERNS / folder, "gimp-data").glob("*.pat"))]
        for i in range(TEXTURE_CROPS):
            images.append(_crop(patterns[i % len(patterns)], rng))
            labels.append(label)
    return images, labels
