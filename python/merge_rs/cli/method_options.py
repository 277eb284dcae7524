"""Click options generated from the engine's method table: one option per parameter name (shared by every method
that takes it), its help saying which methods take it and with what default, and the method list for
``--help``, one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from ..methods import METHODS, Parameter
from .app import float_list, float_or_list, name_list


def _click_type(p: Parameter) -> dict[str, Any]:
    if p.kind in ("f32", "f64"):
        return {"type": float}
    if p.kind == "u64":
        return {"type": click.IntRange(min=0)}
    if p.kind == "choice":
        return {"type": click.Choice(list(p.choices))}
    if p.kind == "float_list":
        return {"callback": float_list, "metavar": "X,Y,..."}
    if p.kind == "float_or_list":
        return {"callback": float_or_list, "metavar": "X|X,Y,..."}
    if p.kind == "name_list":
        return {"callback": name_list, "metavar": "NAME,NAME,..."}
    if p.kind == "path":
        return {"type": click.Path(path_type=Path)}
    if p.kind == "path_list":
        return {"type": click.Path(path_type=Path), "multiple": True}
    raise ValueError(f"no CLI form for parameter kind '{p.kind}'")


def _help(name: str, declared: list[tuple[str, Parameter]]) -> str:
    first = declared[0][1]
    by_default: dict[str, list[str]] = {}
    for method, p in declared:
        by_default.setdefault(p.default_text(), []).append(method)
    where = "; ".join(f"{', '.join(methods)}: {default}" for default, methods in by_default.items())
    extra = " Repeat once per model, in model order." if first.kind == "path_list" else ""
    return f"{first.help}.{extra} [{where}]"


def parameter_options() -> list[Callable[[Any], Any]]:
    """One click option per parameter name over every method, in table order."""
    declared: dict[str, list[tuple[str, Parameter]]] = {}
    for method in METHODS.values():
        for p in method.parameters:
            declared.setdefault(p.name, []).append((method.name, p))
    options = []
    for name, uses in declared.items():
        flag = "--" + name.replace("_", "-")
        p = uses[0][1]
        if p.kind == "bool":
            options.append(click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=_help(name, uses)))
        else:
            options.append(click.option(flag, name, help=_help(name, uses), **_click_type(p)))
    return options


def method_list() -> str:
    """``--help``'s method list, one per line (``\\b`` keeps click from re-wrapping it)."""
    width = max(len(n) for n in METHODS) + 2
    lines = [f"  {m.name:<{width}}{m.summary}" for m in METHODS.values()]
    return "Methods (`merge-rs methods` lists their papers and parameters):\n\n\b\n" + "\n".join(lines)


def method_details() -> str:
    """Every method with its paper and parameters."""
    blocks = []
    for m in METHODS.values():
        params = "\n".join(f"    --{p.name.replace('_', '-')}  {p.help} (default: {p.default_text()})"
                           for p in m.parameters) or "    (no parameters)"
        base = "needs --pretrained" if m.needs_pretrained else "no pretrained model"
        blocks.append(f"{m.name}: {m.summary}\n  {m.paper}; {base}; at least {m.min_models} models\n{params}")
    return "\n\n".join(blocks)
