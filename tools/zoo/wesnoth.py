"""Battle for Wesnoth's unit sprites, by race: Debian ``wesnoth-1.16-data`` (GPL 2+).

The task asks which race a unit is (dwarf, human, undead, ...), from the 72×72 sprites the game draws it with:
one artist group's style, eight kinds that differ by meaning, not by shape alone. Most sprites are animation frames
of one unit (``spearman-attack-s-14.png``, ``spearman-defend-1.png``), so each image carries its unit as its group
(``splits.py``): a unit's frames never straddle two splits.

Only the unit sprites are needed. ``make zoo-deps`` unpacks them from the package into its usual place without
installing it, because its dependencies add fonts that the letters and symbols tasks would then draw with.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from merge_rs.clip.tasks import RACES

from .artwork import on_white
from .missing import SourceMissing
from .resolution import source_pixels

UNITS = Path("/usr/share/games/wesnoth/1.16/data/core/images/units")
# Race (RACES, in order) → the unit folders that draw it.
RACE_FOLDERS: dict[str, tuple[str, ...]] = {
    "dwarf": ("dwarves",),
    "human": ("human-loyalists", "human-magi", "human-outlaws", "human-peasants"),
    "undead": ("undead", "undead-necromancers", "undead-skeletal"),
    "saurian": ("saurians",),
    "drake": ("drakes",),
    "elf": ("elves-wood",),
    "orc": ("orcs", "goblins"),
    "merfolk": ("merfolk", "nagas"),
}
PER_RACE = 600  # whole units, in a seeded order, until a race has this many images
assert tuple(RACE_FOLDERS) == RACES, "the task's class order"


def unit_of(path: Path) -> str:
    """A sprite's unit: its subfolder when it has one (``elves-wood/scout/…``), else its folder and its file name up
    to the first hyphen (``dwarves/ulfserker-attack-3.png`` → ``dwarves/ulfserker``)."""
    relative = path.relative_to(UNITS)
    if len(relative.parts) > 2:
        return "/".join(relative.parts[:2])
    return f"{relative.parts[0]}/{path.stem.split('-')[0]}"


def race_sprites(race: str) -> list[Path]:
    """At most about ``PER_RACE`` sprites of ``race``: whole units, drawn in a seeded order."""
    if not UNITS.is_dir():
        raise SourceMissing(f"{UNITS} not found: 'make zoo-deps' unpacks it from the Debian package wesnoth-1.16-data")
    units: dict[str, list[Path]] = {}
    for folder in RACE_FOLDERS[race]:
        for path in sorted((UNITS / folder).rglob("*.png")):
            units.setdefault(unit_of(path), []).append(path)
    order = sorted(units)
    random.Random(f"0:wesnoth:{race}").shuffle(order)  # the order the probes of 2026-12-07 drew
    chosen: list[Path] = []
    for unit in order:
        if len(chosen) >= PER_RACE:
            break
        chosen += units[unit]
    return chosen


def units() -> tuple[list[Image.Image], list[int], list[str]]:
    """Every chosen sprite on white at the zoo's drawing size, its race's index, and its unit (the group)."""
    images, labels, groups = [], [], []
    side = source_pixels()
    for label, race in enumerate(RACES):
        for path in race_sprites(race):
            with Image.open(path) as sprite:
                images.append(on_white(sprite).resize((side, side), Image.Resampling.LANCZOS))
            labels.append(label)
            groups.append(unit_of(path))
    return images, labels, groups
