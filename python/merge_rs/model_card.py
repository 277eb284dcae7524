"""The model card every output gets (``README.md``, the Hub's format): front matter naming the base models,
the method with its paper, the resolved parameters, and the recipe that reproduces the merge."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ._core import __version__
from .methods import get_method
from .text import printable


def model_card(*, method: str, parameters: dict[str, Any], pretrained: str | None, models: list[str],
               recipe: str, groups: Sequence[tuple[list[str], dict[str, Any]]] = (), hf_layout: bool = True,
               title: str = "merged model", note: str | None = None) -> str:
    """The card's text. ``recipe`` is YAML that ``merge-rs run`` accepts (this card file too)."""
    info = get_method(method)
    parameters = resolved_parameters(method, parameters)
    groups = [(names, resolved_parameters(method, values)) for names, values in groups]
    pretrained = _reference(pretrained) if pretrained else None
    models = [_reference(m) for m in models]
    front = {
        "base_model": [*([pretrained] if pretrained else []), *models],
        "library_name": "transformers" if hf_layout else "safetensors",
        "tags": ["merge", "merge-rs"],
    }
    lines = [
        "---", card_yaml(front, quoted=True).rstrip(), "---", "", f"# {printable(title)}", "",
        f"Merged with merge-rs {__version__}.", "",
        "## Method", "",
        f"**{info.name}**: {info.summary} ([paper]({info.paper})).", "",
        *([note, ""] if note else []),
        *([f"- Pretrained model: {code(pretrained)}"] if pretrained else []),
        *(f"- Model {i + 1}: {code(m)}" for i, m in enumerate(models)), "",
        "## Parameters", "",
        "| parameter | value |", "| --- | --- |",
        *(f"| {code(k)} | {code(show(v))} |" for k, v in sorted(parameters.items())),
    ]
    if groups:
        lines += ["", f"{len(groups)} groups of tensors have other values:", ""]
        for names, values in groups:
            changed = {k: v for k, v in values.items() if parameters.get(k) != v}
            shown = ", ".join(f"{code(k)}={code(show(v))}" for k, v in sorted(changed.items()))
            lines.append(f"- {len(names)} tensors ({code(names[0])}{', …' if len(names) > 1 else ''}): {shown}")
    lines += ["", "## Recipe", "", "Run it again with `merge-rs run README.md --out DIR` (or save the block as a "
              "`.yml` file):", "", RECIPE_FENCE, _fenced(recipe).rstrip(), "```", ""]
    return "\n".join(lines)


# The one fenced block of a card that holds its recipe: ``merge-rs run CARD`` reads this block and no other.
RECIPE_FENCE = "```yaml merge-rs-recipe"
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.MULTILINE)


def code(text: Any) -> str:
    """``text`` (a name or path that came from an input) as one Markdown code span that nothing in it can end."""
    flat = printable(text)
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def card_yaml(data: Any, quoted: bool = False) -> str:
    """YAML for a card: one line per value (a long string folded onto an indented line could read as a fence),
    every string double-quoted if ``quoted`` (so no line of the front matter can read as ``---``)."""
    return yaml.safe_dump(data, sort_keys=False, default_style='"' if quoted else None, allow_unicode=True,
                          width=float("inf"))


def _fenced(recipe: str) -> str:
    """The recipe as the block's content; re-dumped with every string quoted if a line could close the fence."""
    if not _FENCE_LINE.search(recipe):
        return recipe
    return card_yaml(yaml.safe_load(recipe), quoted=True)


def show(value: Any) -> str:
    """A parameter value for people: JSON, with floats to 6 significant digits."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return json.dumps(value, default=str)


def card_for_call(method: str, parameters: dict[str, Any], pretrained: Any, models: Sequence[Any],
                  dtype: str | None, max_shard_size: int | str, out: Any, note: str | None = None) -> str:
    """The card of ``merge_rs.merge(method, models, out, pretrained=..., **parameters)``: its recipe is that call."""
    given = [(os.fspath(m[0]), os.fspath(m[1])) if isinstance(m, tuple) else os.fspath(m) for m in models]
    paths = ["+".join(m) if isinstance(m, tuple) else m for m in given]
    base = os.fspath(pretrained) if pretrained is not None else None
    recipe = recipe_from_flags(method, parameters, base, given, dtype, max_shard_size)
    first = given[0][0] if given and isinstance(given[0], tuple) else paths[0] if paths else ""
    hf = bool(paths) and os.path.exists(os.path.join(first, "config.json"))
    return model_card(method=method, parameters=parameters, pretrained=base, models=paths, recipe=recipe,
                      hf_layout=hf, title=os.path.basename(os.path.normpath(os.fspath(out))), note=note)


def resolved_parameters(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` with the method's defaults filled in."""
    spec = get_method(method)
    return {p.name: given.get(p.name, p.default) for p in spec.parameters
            if p.name in given or p.default is not None}


def _reference(ref: str) -> str:
    """A local model as its absolute path; a hub id as it is."""
    return str(Path(ref).resolve()) if Path(ref).exists() else ref


def recipe_from_flags(method: str, parameters: dict[str, Any], pretrained: str | None,
                      models: Sequence[str | tuple[str, str]], dtype: str | None, max_shard_size: str | int) -> str:
    """The recipe equivalent to ``merge-rs merge`` flags (paths made absolute so it runs from anywhere)."""
    paths = {p.name for p in get_method(method).parameters if p.kind in ("path", "path_list")}
    data: dict[str, Any] = {"method": method, "parameters": {
        k: _absolute(v) if k in paths else _plain(v) for k, v in parameters.items()}}
    if pretrained is not None:
        data["pretrained"] = str(Path(pretrained).resolve())
    data["models"] = [{"model": str(Path(m[0]).resolve()), "lora": str(Path(m[1]).resolve())}
                      if isinstance(m, tuple) else str(Path(m).resolve()) for m in models]
    if dtype:
        data["dtype"] = dtype
    data["max_shard_size"] = max_shard_size
    return card_yaml(data)


def _absolute(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_absolute(v) for v in value]
    return str(Path(value).resolve())


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
