"""Parameter values that vary over a model, as mergekit evaluates them: a plain value; a gradient (a list of
numbers interpolated over the layer index, t = layer / (layers − 1)); or conditions (``filter``: a substring
of the tensor name, the first match wins)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_LAYER = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class Gradient:
    """Values at evenly spaced points of the layer range, interpolated linearly between them."""

    anchors: tuple[Any, ...]

    def at(self, t: float) -> Any:
        values = self.anchors
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * values[i0] + frac * values[i1]


@dataclass(frozen=True)
class Conditional:
    """A value for the tensors whose name contains ``filter`` (every tensor when it is None or ``*``)."""

    value: Any
    filter: str | None = None

    def matches(self, tensor: str) -> bool:
        return self.filter in (None, "*") or self.filter in tensor


def evaluate(setting: Any, tensor: str, t: float) -> Any:
    """The value of ``setting`` for ``tensor`` at layer position ``t``; None when no condition matches."""
    if isinstance(setting, Gradient):
        return setting.at(t)
    if isinstance(setting, list) and setting and all(isinstance(c, Conditional) for c in setting):
        for condition in setting:
            if condition.matches(tensor):
                return evaluate(condition.value, tensor, t)
        return None
    return setting


def scoped(nearer: dict[str, Any], farther: dict[str, Any]) -> dict[str, Any]:
    """Settings from two scopes, the nearer first, as mergekit resolves them: a nearer value replaces the farther
    one, except where the nearer one's conditions match no tensor, which then takes the farther value."""
    out = dict(farther)
    for name, setting in nearer.items():
        falls_through = isinstance(setting, list) and bool(setting) and all(isinstance(c, Conditional) for c in setting)
        out[name] = [*setting, Conditional(farther[name])] if falls_through and name in farther else setting
    return out


def varies_by_layer(setting: Any) -> bool:
    """Whether ``setting`` holds a gradient (of more than one value) anywhere."""
    if isinstance(setting, Gradient):
        return len(setting.anchors) > 1
    if isinstance(setting, list):
        return any(isinstance(c, Conditional) and varies_by_layer(c.value) for c in setting)
    return False


def layer_of(tensor: str) -> int | None:
    """The layer index in a tensor name: the first number between dots (``model.layers.3.mlp`` → 3)."""
    match = _LAYER.search(tensor)
    return int(match.group(1)) if match else None


def layer_positions(tensors: list[str], layers: int | None = None) -> dict[str, float]:
    """t for every tensor: layer / (layers − 1), 1 for a one-layer model, and 0 for tensors outside the
    layers (embeddings, final norm), as mergekit gives them. ``layers`` defaults to the highest index + 1."""
    indices = {name: layer_of(name) for name in tensors}
    found = [i for i in indices.values() if i is not None]
    count = layers if layers is not None else (max(found) + 1 if found else 0)
    positions = {}
    for name, index in indices.items():
        if index is None:
            positions[name] = 0.0
        else:
            positions[name] = index / (count - 1) if count > 1 else 1.0
    return positions
