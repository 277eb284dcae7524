"""Learned merging weights as a readable JSON file that the Rust engine's per-tensor coefficients take directly:
``{"method", "mode", "tasks", "coefficients": {tensor: [λ per task]}, "default": [λ per task]}``. Task-wise weights
are written as ``default`` alone; layer-wise ones name every tensor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save_weights(path: Path, tasks: list[str], names: list[str], weights: Any, method: str,
                 extra: dict[str, Any] | None = None) -> None:
    """``weights`` is a [tasks] or [tasks, tensors] tensor or nested list."""
    values = weights.tolist() if hasattr(weights, "tolist") else weights
    layer_wise = bool(values) and isinstance(values[0], list)
    data: dict[str, Any] = {"method": method, "mode": "layer" if layer_wise else "task", "tasks": tasks}
    if layer_wise:
        data["coefficients"] = {name: [row[j] for row in values] for j, name in enumerate(names)}
    else:
        data["coefficients"] = {}
        data["default"] = values
    data.update(extra or {})
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_weights(path: Path, tasks: list[str], names: list[str]) -> list[list[float]] | list[float]:
    """The weights in ``save_weights``' layout: [tasks] for task-wise files, [tasks][tensors] for layer-wise."""
    try:
        data = json.loads(Path(path).read_text())
        table: dict[str, list[float]] = data.get("coefficients", {})
        default = data.get("default")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{path}: not a merging-weights file ({e})") from None
    if data.get("tasks") and list(data["tasks"]) != list(tasks):
        raise ValueError(f"{path}: its tasks {data['tasks']} differ from the pool's {tasks}")
    if not table:
        if default is None or len(default) != len(tasks):
            raise ValueError(f"{path}: needs one default weight per task ({len(tasks)})")
        return [float(x) for x in default]
    rows = []
    for name in names:
        column = table.get(name, default)
        if column is None or len(column) != len(tasks):
            raise ValueError(f"{path}: no weights for tensor '{name}' (one per task)")
        rows.append([float(x) for x in column])
    return [list(col) for col in zip(*rows)]
