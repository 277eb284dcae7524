"""Typed view of the engine's method table (``_core.method_table_json``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .. import _core
from ..exceptions import InvalidArgumentError

@dataclass(frozen=True)
class Parameter:
    """One parameter of a method: ``kind`` is f32, f64, u64, bool, choice, float_list,
    float_or_list, name_list, path or path_list."""

    name: str
    kind: str
    default: Any
    help: str
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @classmethod
    def from_table(cls, data: dict[str, Any]) -> Parameter:
        kind = data["kind"]
        return cls(name=data["name"], kind=kind["type"], default=data["default"], help=data["help"],
                   required=data["required"], choices=tuple(kind.get("choices", ())), minimum=kind.get("min"), maximum=kind.get("max"))

    def problem(self, value: Any, *, element: bool = False) -> str | None:
        """What ``value`` should have been (one element of this list parameter with ``element``), or None."""
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        numbers = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  and math.isfinite(v) for v in value)
        names = isinstance(value, list) and all(isinstance(v, str) for v in value)
        kind = {"float_list": "f64", "float_or_list": "f64", "path_list": "path"}.get(self.kind, self.kind) \
            if element else self.kind
        if kind in ("f32", "f64"):
            low, high = self.minimum, self.maximum
            inside = number and (low is None or value >= low) and (high is None or value <= high)
            return None if inside else f"a number in [{low}, {high}]" if low is not None else "a number"
        checks = {
            "u64": (isinstance(value, int) and not isinstance(value, bool) and value >= 0, "an integer ≥ 0"),
            "bool": (isinstance(value, bool), "true or false"),
            "choice": (isinstance(value, str) and value.replace("-", "_") in [c.replace("-", "_") for c in self.choices],
                       f"one of {', '.join(self.choices)}"),
            "float_list": (numbers, "a list of finite numbers"),
            "float_or_list": (number or numbers, "a finite number or a list of finite numbers"),
            "name_list": (names, "a list of tensor names"),
            "path": (isinstance(value, str), "a path"),
            "path_list": (names, "a list of paths"),
        }
        ok, wanted = checks.get(kind, (True, ""))
        return None if ok else wanted

    def default_text(self) -> str:
        """The default as a user would write it."""
        if self.required:
            return "required"
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


@dataclass(frozen=True)
class MethodInfo:
    """A merge method as the engine declares it."""

    name: str
    summary: str
    paper: str
    needs_pretrained: bool
    min_models: int
    max_models: int | None
    extra_inputs: str | None
    parameters: tuple[Parameter, ...]

    @classmethod
    def from_table(cls, data: dict[str, Any]) -> MethodInfo:
        return cls(name=data["name"], summary=data["summary"], paper=data["paper"],
                   needs_pretrained=data["needs_base"], min_models=data["min_models"],
                   max_models=data["max_models"], extra_inputs=data["extra_inputs"],
                   parameters=tuple(Parameter.from_table(p) for p in data["params"]))

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def data_free(self) -> bool:
        """Whether it merges from the checkpoints alone, every parameter defaulted (what the demo runs)."""
        return self.extra_inputs is None and not any(p.required for p in self.parameters)


METHODS: dict[str, MethodInfo] = {
    m["name"]: MethodInfo.from_table(m) for m in json.loads(_core.method_table_json())
}


def get_method(name: str) -> MethodInfo:
    """The method called ``name`` (``-`` and ``_`` are interchangeable)."""
    key = name.replace("-", "_").lower()
    if key not in METHODS:
        raise InvalidArgumentError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[key]


def markdown_table() -> str:
    """The README's method table."""
    rows = ["| method | what it computes | parameters (default) | needs θ₀ | paper |", "| --- | --- | --- | --- | --- |"]
    for m in METHODS.values():
        params = ", ".join(f"`{p.name}` ({p.default_text()})" for p in m.parameters) or "–"
        rows.append(f"| `{m.name}` | {m.summary} | {params} | {'yes' if m.needs_pretrained else 'no'} | "
                    f"[link]({m.paper}) |")
    return "\n".join(rows) + "\n"
