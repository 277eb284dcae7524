"""mergekit's ``modules``: a config's models or slices given per module of the architecture, each module with its
own ``parameters`` between the slices' and the config's. merge-rs runs the single-module form (one module,
``default``: what mergekit names the module of a decoder-only model such as Llama or Mistral) as the same config
written without ``modules``; multi-module architectures (a vision tower beside a text decoder) are refused by
name."""

from __future__ import annotations

from typing import Any

from .source import Loc, RecipeSource

SINGLE = "default"
AT: Loc = ("modules", SINGLE)


def flatten_modules(source: RecipeSource) -> tuple[RecipeSource, Any]:
    """``source`` with its one module's models or slices moved to the top (errors still name the module's lines),
    and the module's raw ``parameters`` (None without), which go between the slices' and the config's."""
    data = source.data
    modules = data["modules"]
    if not isinstance(modules, dict) or not modules:
        raise source.error(("modules",), "modules is a mapping of module name: {models or slices, parameters}")
    for key in ("models", "slices"):
        if key in data:
            raise source.error((key,), "a config has exactly one of models, slices or modules")
    if list(modules) != [SINGLE]:
        names = ", ".join(str(name) for name in modules)
        raise source.error(("modules",), f"merge-rs runs modules for single-module architectures only (one module, "
                                         f"'{SINGLE}'); per-module merges ({names}) are not supported yet")
    module = modules[SINGLE]
    if not isinstance(module, dict) or set(module) - {"models", "slices", "parameters"}:
        raise source.error(AT, "a module has models or slices (and parameters)")
    if ("models" in module) == ("slices" in module):
        raise source.error(AT, "a module has either models or slices")
    body = "models" if "models" in module else "slices"
    flat = {**{k: v for k, v in data.items() if k != "modules"}, body: module[body]}
    own = module.get("parameters")
    moved = {("parameters", k): (*AT, "parameters", k)
             for k in (own if isinstance(own, dict) else {}) if k not in (data.get("parameters") or {})}
    return source.rearranged(flat, {(body,): (*AT, body), **moved}), own
