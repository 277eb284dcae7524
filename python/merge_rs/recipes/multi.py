"""mergekit-multi's configs, run as one job: one YAML file of several documents, each a mergekit config. A
document with ``name:`` is an intermediate merge, written under the intermediate directory with that name; other
documents use it by naming it as a model (``name`` or ``name+lora``, wherever a model goes). The one document
without a name is the final merge, written to ``--out``. The documents run in dependency order."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .source import Loc, RecipeError, RecipeSource, load_sources

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Step:
    """One document: its name (None for the final merge), its source with the names of intermediate merges
    replaced by their directories, and the intermediate merges it reads."""

    name: str | None
    source: RecipeSource
    needs: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or "the final merge"


def load_steps(path: Path, overrides: Sequence[str], intermediate_dir: Path | None) -> list[Step]:
    """The file's documents in the order they must run (one step for a one-document recipe)."""
    sources = load_sources(path, overrides)
    if len(sources) == 1 and "name" not in sources[0].data:
        return [Step(None, sources[0])]
    steps = [_step(source) for source in sources]
    _check_names(steps)
    names = {s.name for s in steps if s.name}
    if intermediate_dir is None:
        raise RecipeError(f"{path}: names intermediate merges ({', '.join(sorted(names))}): give the directory "
                          "they are written to with --intermediate-dir")
    for step in steps:
        for container, key, loc in _references(step.source.data):
            head, plus, lora = container[key].partition("+")
            if head in names:
                if head == step.name:
                    raise step.source.error(loc, f"the merge '{head}' cannot read itself")
                container[key] = f"{intermediate_dir.absolute() / head}{plus}{lora}"
                step.needs += [head] if head not in step.needs else []
    return _in_order(path, steps)


def targets(steps: list[Step], out: Path | None, intermediate_dir: Path | None, overwrite: bool = False
            ) -> list[Path]:
    """Where each step writes (its name under the intermediate directory, or ``out``), checked before any work:
    each can be written, none is a model the steps read, and ``out`` and the intermediate directory do not hold
    one another."""
    from ..output import check_output
    from .job import resolve_model

    if any(s.name is None for s in steps) and out is None:
        raise RecipeError(f"{steps[0].source.path}: give the final merge's directory with --out")
    places = [intermediate_dir / s.name if s.name and intermediate_dir else out for s in steps]
    if out is not None and intermediate_dir is not None and len(places) > 1:
        a, b = out.absolute(), intermediate_dir.absolute()
        if a == b or a.is_relative_to(b) or b.is_relative_to(a):
            raise RecipeError(f"--out {out} and --intermediate-dir {intermediate_dir} must not hold one another")
    merged = {str(p.absolute()) for p in places if p is not None}
    models = {resolve_model(part, s.source, loc) for s in steps for container, key, loc in _references(s.source.data)
              for part in container[key].split("+", 1) if part not in merged}
    found = [p for p in places if p is not None]
    for place in found:
        check_output(place, [steps[0].source.path, *models, *(p for p in found if p is not place)], overwrite)
    return found


def _step(source: RecipeSource) -> Step:
    name = source.data.pop("name", None)
    if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
        raise source.error(("name",), "a merge's name is a directory name: letters, digits, '_', '.', '-'")
    return Step(name, source)


def _check_names(steps: list[Step]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.name in seen:
            raise step.source.error(("name",), f"a second merge named '{step.name}'")
        seen.add(step.name or "")
    finals = [s for s in steps if s.name is None]
    if len(finals) > 1:
        raise finals[1].source.error((), f"{len(finals)} documents have no name; only the final merge may go "
                                         "without one (name the others to merge them in one run)")


def _references(data: dict[str, Any]) -> Iterator[tuple[Any, Any, Loc]]:
    """Every model reference of a mergekit document, as (container, key, location)."""
    if isinstance(data.get("base_model"), str):
        yield data, "base_model", ("base_model",)
    for i, entry in enumerate(data.get("models") or [] if isinstance(data.get("models"), list) else []):
        if isinstance(entry, str):
            yield data["models"], i, ("models", i)
        elif isinstance(entry, dict) and isinstance(entry.get("model"), str):
            yield entry, "model", ("models", i, "model")
    for i, piece in enumerate(data.get("slices") or [] if isinstance(data.get("slices"), list) else []):
        for j, entry in enumerate(piece.get("sources") or [] if isinstance(piece, dict) else []):
            if isinstance(entry, dict) and isinstance(entry.get("model"), str):
                yield entry, "model", ("slices", i, "sources", j, "model")


def _in_order(path: Path, steps: list[Step]) -> list[Step]:
    """The steps, each after the merges it reads (a cycle is an error naming it)."""
    by_name = {s.name: s for s in steps if s.name}
    done: list[Step] = []
    visiting: list[str] = []

    def visit(step: Step) -> None:
        if any(step is d for d in done):
            return
        if step.name in visiting:
            cycle = visiting[visiting.index(step.name):] + [step.name]
            raise RecipeError(f"{path}: the merges read each other in a cycle: {' → '.join(cycle)}")
        visiting.append(step.name or "")
        for need in step.needs:
            visit(by_name[need])
        visiting.pop()
        done.append(step)

    for step in steps:
        visit(step)
    return done
