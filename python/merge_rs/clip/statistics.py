"""Numbers that hold up: 95 % bootstrap intervals of a row's average accuracy (each task's test examples
resampled with replacement, the per-task accuracies averaged), and normalised accuracy (each task's accuracy
over the fine-tuned model's on it, averaged over tasks, as the merging papers report it)."""

from __future__ import annotations

from typing import Any

BOOTSTRAP_ROUNDS = 2000


def bootstrap_interval(correct: dict[str, list[bool]], rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
                       ) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the average accuracy over ``rounds`` resamples of every task."""
    import numpy as np

    rng = np.random.default_rng(seed)
    averages = np.zeros(rounds)
    for hits in correct.values():
        values = np.asarray(hits, dtype=np.float64)
        picks = rng.integers(0, len(values), size=(rounds, len(values)))
        averages += values[picks].mean(axis=1)
    averages /= len(correct)
    low, high = np.percentile(averages, [2.5, 97.5])
    return float(low), float(high)


def normalized_accuracy(row: dict[str, Any], fine_tuned: dict[str, Any], tasks: list[str]) -> float:
    """Mean over tasks of this row's accuracy over the fine-tuned (individual) accuracy."""
    ratios = [row[t]["accuracy"] / fine_tuned[t]["accuracy"] for t in tasks if fine_tuned[t]["accuracy"] > 0]
    return sum(ratios) / len(ratios) if ratios else float("nan")
