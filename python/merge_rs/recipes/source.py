"""Reading a recipe file: YAML (or the recipe block of a model card) with the line of every field, so that
errors name the file, the line and the field; and ``KEY=VALUE`` overrides applied before anything is checked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import InvalidArgumentError
from .bounded_yaml import load_all, read_recipe_text, safe_load

Loc = tuple[Any, ...]
_CARD_BLOCK = re.compile(r"^```ya?ml[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_MARKED_BLOCK = re.compile(r"^```ya?ml merge-rs-recipe[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


class RecipeError(InvalidArgumentError):
    """A recipe that cannot run, named by file, line and field."""


@dataclass
class RecipeSource:
    """A recipe's data (overrides applied) and where each field was written."""

    path: Path
    data: dict[str, Any]
    lines: dict[Loc, int] = field(default_factory=dict)
    overridden: set[Loc] = field(default_factory=set)
    moved: dict[Loc, Loc] = field(default_factory=dict)  # a field of ``data`` → where the file wrote it

    def error(self, loc: Loc, message: str) -> RecipeError:
        """``FILE:LINE: field: message`` for the field at ``loc``."""
        loc = self._written(loc)
        name = ".".join(str(k) for k in loc)
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.overridden:
                return RecipeError(f"{self.path}: {name} (set on the command line): {message}")
            if loc[:end] in self.lines:
                where = f"{self.path}:{self.lines[loc[:end]]}"
                return RecipeError(f"{where}: {name}: {message}" if name else f"{where}: {message}")
        return RecipeError(f"{self.path}: {name}: {message}" if name else f"{self.path}: {message}")

    def rearranged(self, data: dict[str, Any], moved: dict[Loc, Loc]) -> RecipeSource:
        """A copy holding ``data``, whose fields at the keys of ``moved`` the file wrote at its values."""
        return replace(self, data=data, moved={**self.moved, **moved})

    def _written(self, loc: Loc) -> Loc:
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.moved:
                return (*self.moved[loc[:end]], *loc[end:])
        return loc


def load_source(path: Path, overrides: Sequence[str] = ()) -> RecipeSource:
    """The recipe at ``path`` (a YAML file, or a model card holding one) with ``overrides`` applied."""
    sources = load_sources(path, overrides)
    if len(sources) != 1:
        raise RecipeError(f"{path}: holds {len(sources)} YAML documents; a recipe is one (a mergekit-multi config "
                          "runs with merge-rs run --intermediate-dir)")
    return sources[0]


def load_sources(path: Path, overrides: Sequence[str] = ()) -> list[RecipeSource]:
    """Each YAML document of the file at ``path`` (a model card holds one), with ``overrides`` applied to the
    only one (overrides are refused when there are several)."""
    try:
        raw = read_recipe_text(path)
    except InvalidArgumentError as e:
        raise RecipeError(str(e)) from None
    text, offset = _recipe_text(path, raw)
    try:
        documents = load_all(text, str(path))
    except InvalidArgumentError as e:
        raise RecipeError(str(e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1 + offset}" if mark is not None else ""
        raise RecipeError(f"{path}{line}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    sources = []
    for node, data in documents:
        if not isinstance(data, dict):
            at = f":{node.start_mark.line + 1 + offset}" if len(documents) > 1 else ""
            raise RecipeError(f"{path}{at}: a recipe is a YAML mapping of fields (method, models, parameters, ...)")
        sources.append(RecipeSource(path=path, data=data))
        _record_lines(node, (), sources[-1].lines, offset)
    if not sources:
        raise RecipeError(f"{path}: a recipe is a YAML mapping of fields (method, models, parameters, ...)")
    if overrides and len(sources) > 1:
        raise RecipeError(f"{path}: KEY=VALUE overrides need a one-document recipe; this file holds "
                          f"{len(sources)} documents")
    for override in overrides:
        _apply(sources[0], override)
    return sources


def is_card(path: Path) -> bool:
    return path.suffix.lower() in (".md", ".markdown")


def _recipe_text(path: Path, raw: str) -> tuple[str, int]:
    """The YAML text and the line it starts after: a model card's one recipe block, or the whole file. A card
    written by merge-rs marks its block (```yaml merge-rs-recipe); a card without a marked block may hold one
    plain ```yaml block. A card with more than one candidate is refused: which one runs must not be a guess."""
    if not is_card(path):
        return raw, 0
    marked = list(_MARKED_BLOCK.finditer(raw))
    blocks = marked or list(_CARD_BLOCK.finditer(raw))
    if not blocks:
        raise RecipeError(f"{path}: no ```yaml recipe block in this model card")
    if len(blocks) > 1:
        lines = ", ".join(str(raw[: m.start(1)].count("\n")) for m in blocks)
        raise RecipeError(f"{path}: the card holds {len(blocks)} recipe blocks (before lines {lines}); a card "
                          "must hold exactly one")
    return blocks[0].group(1), raw[: blocks[0].start(1)].count("\n")


def _record_lines(node: yaml.Node | None, loc: Loc, lines: dict[Loc, int], offset: int) -> None:
    if node is None:
        return
    lines[loc] = node.start_mark.line + 1 + offset
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = loc + (key.value,)
            _record_lines(value, child, lines, offset)
            lines[child] = key.start_mark.line + 1 + offset
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, loc + (i,), lines, offset)


def _apply(source: RecipeSource, override: str) -> None:
    """``a.b.0.c=VALUE``: set that field (VALUE read as YAML: 0.4, true, [1, 2], text)."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override '{override}' is not KEY=VALUE (e.g. parameters.scaling_factor=0.4)")
    try:
        parsed = safe_load(value, f"override '{key.strip()}'") if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    parts: list[Any] = key.strip().split(".")
    target: Any = source.data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise RecipeError(f"override '{key}': {'.'.join(parts[:depth]) or 'the recipe'} has no item {part}")
            parts[depth] = int(part)
        elif not isinstance(target, dict):
            raise RecipeError(f"override '{key}': {'.'.join(map(str, parts[:depth]))} is not a mapping")
        elif not last and parts[depth] not in target:
            target[parts[depth]] = {}
        if last:
            target[parts[depth]] = parsed
        else:
            target = target[parts[depth]]
    source.overridden.add(tuple(parts))
