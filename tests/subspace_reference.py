"""In-memory torch implementations of Iso-C, Iso-CTS and TSV-M, written after FusionBench's
``isotropic_merging/iso_utils.py`` and ``task_singular_vector/utils/TSVM_utils.py``: every task vector is held
at once and each matrix goes through ``torch.linalg.svd``. Each takes the pretrained state dict and the task
vectors. The tests and ``benches/subspace.py`` compare the engine's streamed versions against these."""

from __future__ import annotations

import torch

Tensors = dict[str, torch.Tensor]


def is_matrix(value: torch.Tensor, name: str, exclude: list[str]) -> bool:
    return value.dim() == 2 and name not in exclude


def task_vectors(base: Tensors, models: list[Tensors]) -> list[Tensors]:
    return [{k: m[k] - base[k] for k in base} for m in models]


def running_mean(values: list[torch.Tensor]) -> torch.Tensor:
    mean = values[0].clone()
    for i, v in enumerate(values[1:], start=1):
        mean += (v - mean) / (i + 1)
    return mean


def svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.linalg.svd`` (thin). LAPACK's divide-and-conquer fails to converge on some matrices with many
    repeated singular values (Iso-CTS's projected task vectors: in float32 on 8 × ViT-L/14, in float64 on
    8 × ViT-B/32), which are then factorised in float64, by QR iteration (``gesvd``) if need be, and rounded
    back."""
    try:
        return torch.linalg.svd(a, full_matrices=False)
    except torch.linalg.LinAlgError:
        pass
    try:
        return tuple(x.to(a.dtype) for x in torch.linalg.svd(a.double(), full_matrices=False))
    except torch.linalg.LinAlgError:
        import scipy.linalg

        factors = scipy.linalg.svd(a.double().numpy(), full_matrices=False, lapack_driver="gesvd")
        return tuple(torch.from_numpy(x).to(a.dtype) for x in factors)


def polar(a: torch.Tensor) -> torch.Tensor:
    u, _, vh = svd(a)
    return u @ vh


def iso_c(base: Tensors, tvs: list[Tensors], scaling_factor: float = 1.0, exclude_keys: list[str] = ()) -> Tensors:
    out = {}
    for key in base:
        merged = sum(tv[key] for tv in tvs) / len(tvs)
        if is_matrix(merged, key, list(exclude_keys)):
            merged *= len(tvs)
            u, s, vh = svd(merged)
            merged = u @ torch.diag(torch.ones_like(s) * s.mean()) @ vh
        out[key] = base[key] + scaling_factor * merged
    return out


def iso_cts(base: Tensors, tvs: list[Tensors], scaling_factor: float = 1.0, common_space_fraction: float = 0.8,
            exclude_keys: list[str] = ()) -> Tensors:
    out = {}
    for key in base:
        if not is_matrix(base[key], key, list(exclude_keys)):
            out[key] = base[key] + scaling_factor * running_mean([tv[key] for tv in tvs])
            continue
        r, t = min(base[key].shape), len(tvs)
        k = int(r * common_space_fraction)
        k = r - round((r - k) / t) * t
        u, s, vh = svd(sum(tv[key] for tv in tvs))
        cu, cs, cv = u[:, :k], s[:k], vh[:k, :]
        d = int((r - k) / t)
        us, ss, vs = [], [], []
        for tv in tvs:
            w = tv[key] - cu @ cu.T @ tv[key]
            u_t, s_t, vh_t = svd(w)
            us.append(u_t[:, :d]), ss.append(s_t[:d]), vs.append(vh_t[:d, :])
        big_u, big_s, big_v = torch.cat(us + [cu], 1), torch.cat(ss + [cs]), torch.cat(vs + [cv], 0)
        merged = polar(big_u) @ torch.diag(torch.ones_like(big_s) * big_s.mean()) @ polar(big_v)
        out[key] = base[key] + scaling_factor * merged
    return out


def tsv_m(base: Tensors, tvs: list[Tensors], alpha: float | list[float] = 1.0, exclude_keys: list[str] = ()) -> Tensors:
    if isinstance(alpha, list):
        tvs = [{k: v * a for k, v in tv.items()} for tv, a in zip(tvs, alpha)]
        alpha = 1.0
    out = {}
    for key in base:
        if not is_matrix(base[key], key, list(exclude_keys)):
            out[key] = base[key] + alpha * running_mean([tv[key] for tv in tvs])
            continue
        d = int(min(base[key].shape) * (1 / len(tvs)))
        us, ss, vs = [], [], []
        for tv in tvs:
            u, s, vh = svd(tv[key])
            us.append(u[:, :d]), ss.append(s[:d]), vs.append(vh[:d, :])
        if d == 0:
            out[key] = base[key].clone()
            continue
        merged = polar(torch.cat(us, 1)) @ torch.diag(torch.cat(ss)) @ polar(torch.cat(vs, 0))
        out[key] = base[key] + alpha * merged
    return out


REFERENCES = {"iso_c": iso_c, "iso_cts": iso_cts, "tsv_m": tsv_m}
