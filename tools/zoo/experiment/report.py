"""Tables and pictures from experiment results: the markdown tables of ``EXPERIMENTS.md`` and, for
``docs/zoo.md``, task arithmetic's normalised accuracy against the vision tower's size, the single-vector curves,
and the cross-task matrix as a heatmap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .measure import CROSS_LAMBDA


def load_results(places: list[Path]) -> list[dict[str, Any]]:
    """Every result in ``places`` (result files, or directories of them), labelled ``name (device)``; of two with
    one label, the one that measured more stages."""
    best: dict[str, dict[str, Any]] = {}
    for place in places:
        if not place.exists():
            raise FileNotFoundError(f"{place}: no such result file or directory")
        for path in sorted(place.glob("*.json")) if place.is_dir() else [place]:
            result = json.loads(path.read_text())
            result["label"] = f"{result['name']} ({result['device'].split(':')[0]})"
            if len(result["seconds"]) >= len(best.get(result["label"], {}).get("seconds", {})):
                best[result["label"]] = result
    return sorted(best.values(), key=lambda r: (r["device"], r["name"] != "base", r["name"]))


def mean(row: dict[str, float]) -> float:
    return sum(row.values()) / len(row)


def normalised(row: dict[str, float], finetuned: dict[str, float]) -> float:
    """The mean of merged ÷ fine-tuned over the tasks whose fine-tuned accuracy is not 0 (NaN if none)."""
    tasks = [t for t in finetuned if finetuned[t]]
    return 100 * sum(row[t] / finetuned[t] for t in tasks) / len(tasks) if tasks else float("nan")


def best_lambda(result: dict[str, Any]) -> str:
    return max(result["task_arithmetic"], key=lambda lam: mean(result["task_arithmetic"][lam]))


def summary_table(results: list[dict[str, Any]]) -> str:
    head = ("| run | vision params | fp16 MB | pretrained | fine-tuned | TA λ 0.1 | 0.2 | 0.3 | 0.4 | 0.5 | TIES | "
            "AdaMerging (layer) | best TA − pretrained | best TA normalised | seconds |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        if "task_arithmetic" not in r:
            continue
        ta = r["task_arithmetic"]
        best = best_lambda(r)
        cells = [r["label"], f"{r['vision_parameters']:,}", r["float16_mb"], f"{mean(r['pretrained']):.1f}",
                 f"{mean(r['finetuned']):.1f}", *(f"{mean(ta[k]):.1f}" for k in sorted(ta, key=float)),
                 f"{mean(r['ties']):.1f}" if "ties" in r else "–",
                 f"{mean(r['adamerging_layer_wise']):.1f}" if "adamerging_layer_wise" in r else "–",
                 f"{mean(ta[best]) - mean(r['pretrained']):+.1f} (λ {best})",
                 f"{normalised(ta[best], r['finetuned']):.1f}", max(r["seconds"].values())]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def pretraining_table(results: list[dict[str, Any]]) -> str:
    lines = ["| run | vision params | final contrastive loss | pretrained average | per task |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        if "pretrained" not in r:
            continue
        per_task = ", ".join(f"{t} {a:.0f}" for t, a in r["pretrained"].items())
        lines.append(f"| {r['label']} | {r['vision_parameters']:,} | {r['pretrain_losses'][-1]} | "
                     f"{mean(r['pretrained']):.1f} | {per_task} |")
    return "\n".join(lines)


def curves_table(result: dict[str, Any]) -> str:
    """Each single vector's gain on its own task over the pretrained model, as λ grows."""
    lambdas = list(next(iter(result["single_curves"].values())))
    lines = ["| task | " + " | ".join(f"λ {lam}" for lam in lambdas) + " | fine-tuned gain | ‖τ‖/‖θ₀‖ |",
             "| --- |" + " --- |" * (len(lambdas) + 2)]
    for task, curve in result["single_curves"].items():
        gains = [f"{curve[lam] - result['pretrained'][task]:+.1f}" for lam in lambdas]
        lines.append(f"| {task} | " + " | ".join(gains) +
                     f" | {result['finetuned'][task] - result['pretrained'][task]:+.1f} | "
                     f"{result['vector_norms'][task]} |")
    return "\n".join(lines)


def cross_table(result: dict[str, Any]) -> str:
    tasks = list(result["cross"])
    lines = [f"| θ₀ + {CROSS_LAMBDA} τ of ↓ on → | " + " | ".join(tasks) + " |", "| --- |" + " --- |" * len(tasks)]
    for vector in tasks:
        lines.append(f"| {vector} | " + " | ".join(f"{result['cross'][vector][t]:+.1f}" for t in tasks) + " |")
    others = [sum(result["cross"][v][t] for v in tasks if v != t) for t in tasks]
    lines.append("| sum of the other seven | " + " | ".join(f"{x:+.1f}" for x in others) + " |")
    return "\n".join(lines)


def plot_scale(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if "task_arithmetic" in r]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, marker, text in (("best", "o", "task arithmetic, best λ"), ("0.3", "s", "task arithmetic, λ 0.3"),
                              ("pretrained", "x", "pretrained")):
        xs = [r["vision_parameters"] for r in done]
        ys = [normalised(r["pretrained"] if key == "pretrained" else
                         r["task_arithmetic"][best_lambda(r) if key == "best" else key], r["finetuned"]) for r in done]
        ax.scatter(xs, ys, marker=marker, label=text)
    for r in done:  # a thin line from the pretrained model to the best merge: what task arithmetic added
        ax.plot([r["vision_parameters"]] * 2, [normalised(r["pretrained"], r["finetuned"]),
                                              normalised(r["task_arithmetic"][best_lambda(r)], r["finetuned"])],
                color="grey", lw=0.7, zorder=0)
    _label(ax, [(r["vision_parameters"], normalised(r["task_arithmetic"][best_lambda(r)], r["finetuned"]),
                 r["label"]) for r in done])
    ax.set_xscale("log")
    ax.set_xlabel("vision tower parameters")
    ax.set_ylabel("normalised accuracy, 8 tasks (% of fine-tuned)")
    ax.set_title("Where task arithmetic starts to work: the toy zoo")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _label(ax: Any, points: list[tuple[float, float, str]], gap: float = 1.4) -> None:
    """Name each point beside it; labels of points at about the same x are pushed apart vertically."""
    placed: list[tuple[float, float]] = []
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        near = [ly for lx, ly in placed if abs(lx / x - 1) < 0.15]
        ly = min([y, *(v - gap for v in near if v - gap < y + gap)]) if near else y
        placed.append((x, ly))
        ax.annotate(text, (x, y), xytext=(x * 1.03, ly), fontsize=7, va="center",
                    arrowprops={"arrowstyle": "-", "color": "lightgrey", "lw": 0.5} if abs(ly - y) > 0.3 else None)


def plot_cross(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["cross"])
    values = [[result["cross"][v][t] for t in tasks] for v in tasks]
    limit = max(abs(x) for row in values for x in row) or 1
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    for i, row in enumerate(values):
        for j, x in enumerate(row):
            ax.text(j, i, f"{x:+.1f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel(f"θ₀ + {CROSS_LAMBDA} τ of task")
    ax.set_title(f"{result['label']}: accuracy change over pretrained (points)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    _save(fig, path)


def plot_curves(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for task, curve in result["single_curves"].items():
        xs = [0.0, *map(float, curve)]
        ys = [0.0, *(acc - result["pretrained"][task] for acc in curve.values())]
        line, = ax.plot(xs, ys, marker=".", label=task)
        ax.plot([1.0], [result["finetuned"][task] - result["pretrained"][task]], marker="*", ms=9, ls="",
                color=line.get_color())
    ax.axvline(0.3, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("λ (θ₀ + λ τ, one task vector alone)")
    ax.set_ylabel("gain on its own task (points)")
    ax.set_title(f"{result['label']}: single task vectors (★ fine-tuned)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(directories: list[Path], table: Path | None, plots: Path | None, detail: str = "base (cpu)") -> str:
    results = load_results(directories)
    chosen = next((r for r in results if r["label"] == detail and "cross" in r), None)
    text = "\n\n".join([summary_table(results), pretraining_table(results),
                        *([curves_table(chosen), cross_table(chosen)] if chosen else [])]) + "\n"
    if table:
        table.write_text(text)
    else:
        print(text)
    if plots:
        plot_scale(results, plots / "zoo-regime-scale.png")
        if chosen:
            plot_cross(chosen, plots / "zoo-regime-cross.png")
            plot_curves(chosen, plots / "zoo-regime-curves.png")
    return text
