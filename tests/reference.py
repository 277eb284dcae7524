"""A small numpy reference of FusionBench's merging semantics, written from its documented algorithms, to
check the engine on random inputs. Everything is float32 like torch, summed in model order."""

from __future__ import annotations

import numpy as np

F32 = np.float32


def flatten(model: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    return np.concatenate([model[k].astype(F32).ravel() for k in keys])


def unflatten(vector: np.ndarray, like: dict[str, np.ndarray], keys: list[str]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for k in keys:
        n = like[k].size
        out[k] = vector[start : start + n].reshape(like[k].shape)
        start += n
    return out


def ordered_sum(vectors: list[np.ndarray]) -> np.ndarray:
    total = np.zeros_like(vectors[0], dtype=F32)
    for v in vectors:
        total = total + v
    return total


def task_arithmetic(base: np.ndarray, models: list[np.ndarray], lam: float) -> np.ndarray:
    return base + F32(lam) * ordered_sum([m - base for m in models])


def coefficients(base: np.ndarray, models: list[np.ndarray], c: list[float]) -> np.ndarray:
    return base + ordered_sum([F32(ci) * (m - base) for ci, m in zip(c, models)])


def simple_average(models: list[np.ndarray]) -> np.ndarray:
    return ordered_sum(models) / F32(len(models))


def weighted_average(models: list[np.ndarray], weights: list[float], normalize: bool) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if normalize:
        w = w / w.sum()
    return ordered_sum([F32(wi) * m for wi, m in zip(w, models)])


def kth_threshold(tau: np.ndarray, threshold: float) -> F32:
    d = tau.size
    k = d - int(d * (threshold / 100))
    return np.sort(np.abs(tau))[k - 1] if k > 0 else F32(0)


def ties(base: np.ndarray, models: list[np.ndarray], lam: float, threshold: float, merge_func: str,
         groups: list[slice] | None = None) -> tuple[np.ndarray, list[F32]]:
    """TIES over a flat vector; ``groups`` gives per-tensor trim scopes (default: the whole vector)."""
    taus = [m - base for m in models]
    groups = groups or [slice(0, base.size)]
    trimmed, kths = [], []
    for tau in taus:
        t = tau.copy()
        for g in groups:
            kth = kth_threshold(tau[g], threshold)
            kths.append(kth)
            t[g] = np.where(np.abs(tau[g]) >= kth, tau[g], F32(0))
        trimmed.append(t)
    stack = np.stack(trimmed)
    sign = np.sign(ordered_sum(trimmed))
    majority = np.sign(sign.sum())
    sign[sign == 0] = majority
    keep = np.where(sign > 0, stack > 0, stack < 0)
    selected = np.where(keep, stack, F32(0))
    if merge_func == "sum":
        agg = ordered_sum(list(selected))
    elif merge_func == "mean":
        agg = ordered_sum(list(selected)) / np.clip((selected != 0).sum(0), 1, None).astype(F32)
    else:
        agg = np.abs(selected).max(0) * sign.astype(F32)
    return base + F32(lam) * agg.astype(F32), kths
