"""Pictures where people would rather look than read: the task vectors' cosine-similarity heatmap, per-task
accuracy bars, and a sweep's accuracy against its parameter. matplotlib (the ``plot`` extra) is imported only
when a picture is drawn, with the Agg backend, and every file is written under merge-rs's output policy
(``output.write_file_output``), tagged with merge-rs as its PNG ``Software``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .exceptions import InvalidArgumentError
from .output import check_file_output, generator, write_file_output


def check_plot_path(path: Path, inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
    """Fail before any work if ``path`` cannot be a PNG file that merge-rs may write (``output.check_file_output``)
    or matplotlib is missing."""
    if path.suffix.lower() != ".png":
        raise InvalidArgumentError(f"{path}: plots are PNG files (name it *.png)")
    check_file_output(path, inputs, overwrite)
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidArgumentError("plots need matplotlib: pip install 'merge-rs[plot]'") from None
    return plt


def _save(fig: Any, path: Path, inputs: Iterable[Any], overwrite: bool) -> None:
    try:
        write_file_output(path, lambda temp: fig.savefig(temp, dpi=130, bbox_inches="tight", format="png",
                                                         metadata={"Software": generator()}), inputs, overwrite)
    finally:
        _pyplot().close(fig)


def cosine_heatmap(names: Sequence[str], matrix: Sequence[Sequence[float | None]], path: Path, *,
        inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
    """A labelled heatmap of the task vectors' cosine similarities, each cell annotated."""
    plt = _pyplot()
    n = len(names)
    values = [[float("nan") if v is None else float(v) for v in row] for row in matrix]
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * n, 0.9 + 0.65 * n))
    image = ax.imshow(values, cmap="viridis", vmin=min(0.0, *(v for r in values for v in r if v == v)), vmax=1.0)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            text = "–" if v != v else f"{v:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if v != v or v < 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    ax.set_title("Task vectors: cosine similarity")
    _save(fig, path, inputs, overwrite)


def accuracy_bars(report: dict[str, Any], title: str, path: Path, *,
        inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
    """Per-task accuracy of one evaluation report (FusionBench's shape), with the average."""
    plt = _pyplot()
    tasks = [k for k in report if k not in ("model_info", "average")]
    names = [*tasks, "average"]
    values = [100 * report[t]["accuracy"] for t in names]
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(names), 3.6))
    bars = ax.bar(names, values, color=["tab:blue"] * len(tasks) + ["tab:orange"])
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    _save(fig, path, inputs, overwrite)


def sweep_lines(parameter: str, points: Sequence[float], reports: Sequence[dict[str, Any]], best: int,
                references: dict[str, dict[str, Any]], path: Path, title: str, *,
        inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
    """Accuracy per task (thin) and on average (thick) against a swept parameter, the best point marked, and
    reference models (pretrained, fine-tuned) as horizontal lines of the average."""
    plt = _pyplot()
    tasks = [k for k in reports[0] if k not in ("model_info", "average")]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for task in tasks:
        ax.plot(points, [100 * r[task]["accuracy"] for r in reports], linewidth=1, alpha=0.7, marker=".", label=task)
    average = [100 * r["average"]["accuracy"] for r in reports]
    ax.plot(points, average, color="black", linewidth=2.5, marker="o", label="average")
    ax.scatter([points[best]], [average[best]], s=180, facecolors="none", edgecolors="red", linewidths=2, zorder=5,
               label=f"best: {parameter}={points[best]:g} ({average[best]:.1f} %)")
    for (name, report), style in zip(references.items(), ["--", ":", "-."]):
        ax.axhline(100 * report["average"]["accuracy"], color="gray", linestyle=style, label=f"{name} (average)")
    ax.set_xlabel(parameter)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    _save(fig, path, inputs, overwrite)


def normalized_bars(normalized: dict[str, float], references: dict[str, float], path: Path, title: str, *,
        inputs: Iterable[Any] = (), overwrite: bool = False) -> None:
    """One horizontal bar per method: its normalised accuracy (merged over fine-tuned per task, averaged, in %),
    best at the top, and the reference models as vertical lines."""
    plt = _pyplot()
    order = sorted(normalized, key=lambda m: normalized[m])
    values = [100 * normalized[m] for m in order]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.38 * len(order)))
    bars = ax.barh(order, values, color="tab:blue", alpha=0.85)
    ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=3)
    for (name, value), style in zip(references.items(), ["--", ":", "-."]):
        ax.axvline(100 * value, color="gray", linestyle=style, label=f"{name} ({100 * value:.1f})")
    low = min(values + [100 * v for v in references.values()])
    ax.set_xlim(max(0.0, low - 10), max(values + [100.0]) + 6)
    ax.set_xlabel("normalised accuracy (% of the fine-tuned model's, averaged over tasks)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path, inputs, overwrite)
