"""PEFT's ``cat`` combination: task arithmetic of LoRA adapters written as one adapter that stacks their factors.

Per module, Σ cᵢ·sᵢ·BᵢAᵢ = [B₁ … Bₙ] · [c₁s₁A₁; …; cₙsₙAₙ] exactly (sᵢ the adapter's α/r, or α/√r with rsLoRA),
so the adapter holds the merge with no truncation, at rank Σ rᵢ: PEFT's ``add_weighted_adapter(...,
combination_type="cat")``, which scales the A factors the same way. A module some adapters lack stacks the others'.
The output's α equals each module's rank, so its scale is 1."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import _core
from .api import PathLike, _path
from .exceptions import InvalidArgumentError
from .output import atomic_output, generator, protected
from .reports import _jsonable

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
PREFIX = "base_model.model."
FACTORS = {"lora_A.weight": "lora_B.weight", "lora_embedding_A": "lora_embedding_B"}


@dataclass(frozen=True)
class CatReport:
    """What ``concatenate_adapters`` wrote: each module's stacked rank, and the parameters in all."""

    output: Path
    adapters: list[Path]
    coefficients: list[float]
    ranks: dict[str, int]
    parameters: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return _jsonable(asdict(self))


def read_config(adapter: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, checked for what stacking needs (a plain LoRA, no saved modules)."""
    path = adapter / CONFIG
    if not path.is_file():
        raise InvalidArgumentError(f"{adapter}: not a PEFT adapter (no {CONFIG}); cat stacks adapters only")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidArgumentError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not an adapter config")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"{path}: not JSON ({e})") from None
    kind = config.get("peft_type") if isinstance(config, dict) else None
    if kind != "LORA":
        raise InvalidArgumentError(f"{path}: peft_type is {kind!r}; cat stacks LoRA adapters")
    for key, why in (("use_dora", "DoRA's magnitudes do not stack"), ("modules_to_save", "saved modules do not stack"),
                     ("lora_bias", "LoRA biases do not stack")):
        if config.get(key):
            raise InvalidArgumentError(f"{path}: {key} is set, and {why}: use --out-format peft --rank R instead")
    return config


def _torch() -> Any:
    try:
        import torch
        from safetensors import torch as tensors  # noqa: F401
    except ImportError:
        raise InvalidArgumentError("--out-format peft-cat needs torch and safetensors: pip install 'merge-rs[clip]'") \
            from None
    return torch


def read_factors(adapter: Path) -> dict[str, tuple[str, Any, Any]]:
    """module → (A key's suffix, A, B) for every LoRA pair in the adapter's weights, as float32 torch tensors."""
    torch = _torch()
    from safetensors.torch import load_file

    path = adapter / WEIGHTS
    if not path.is_file():
        raise InvalidArgumentError(f"{adapter}: no {WEIGHTS} (merge-rs reads safetensors adapters only)")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise InvalidArgumentError(f"{path}: not a safetensors file ({e})") from None
    out = {}
    for key, a in tensors.items():
        for a_suffix, b_suffix in FACTORS.items():
            if key.endswith("." + a_suffix):
                module = key[: -len(a_suffix) - 1]
                b = tensors.get(f"{module}.{b_suffix}")
                if b is None or a.dim() < 2 or b.dim() < 2 or b.shape[1] != a.shape[0]:
                    raise InvalidArgumentError(f"{path}: {key} has no {b_suffix} of rank {a.shape[0]} beside it")
                out[module.removeprefix(PREFIX)] = (a_suffix, a.to(torch.float32), b.to(torch.float32))
    if not out:
        raise InvalidArgumentError(f"{path}: no lora_A/lora_B pair")
    return out


def stack(adapters: list[dict[str, tuple[str, Any, Any]]], scales: list[dict[str, float]],
          coefficients: Sequence[float]) -> dict[str, tuple[str, Any, Any]]:
    """module → (A key's suffix, [cᵢsᵢAᵢ; …], [Bᵢ …]) over the adapters that adapt it, in their order (sᵢ from
    ``scales``, each adapter's module → PEFT's scale)."""
    torch = _torch()
    modules = sorted({m for factors in adapters for m in factors})
    out = {}
    for module in modules:
        parts = [(factors[module], scale[module], c) for factors, scale, c in zip(adapters, scales, coefficients)
                 if module in factors]
        a_shapes = {tuple(f[1].shape[1:]) for f, _, _ in parts}
        b_shapes = {tuple(f[2].shape[:1]) + tuple(f[2].shape[2:]) for f, _, _ in parts}
        if len(a_shapes) > 1 or len(b_shapes) > 1:
            raise InvalidArgumentError(f"the adapters' factors of module {module} have different shapes")
        a = torch.cat([c * s * f[1] for f, s, c in parts])
        b = torch.cat([f[2] for f, _, _ in parts], dim=1)
        out[module] = (parts[0][0][0], a.contiguous(), b.contiguous())
    return out


def adapter_config(stacked: dict[str, tuple[str, Any, Any]], base: str, fan_in_fan_out: bool) -> dict[str, Any]:
    """PEFT's LoraConfig for the stacked modules: α = r everywhere (scale 1), the most common rank as ``r`` and the
    others in ``rank_pattern`` and ``alpha_pattern`` (their names escaped as patterns)."""
    ranks = {m: a.shape[0] for m, (_, a, _) in stacked.items()}
    counts = {r: list(ranks.values()).count(r) for r in set(ranks.values())}
    r = max(counts, key=lambda k: (counts[k], k))
    others = {re.escape(m): k for m, k in ranks.items() if k != r}
    return {"peft_type": "LORA", "base_model_name_or_path": base, "r": r, "lora_alpha": r,
            "target_modules": sorted(stacked), "rank_pattern": others, "alpha_pattern": others, "lora_dropout": 0.0,
            "bias": "none", "fan_in_fan_out": fan_in_fan_out, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True, "task_type": None}


def concatenate_adapters(adapters: Sequence[PathLike], out: PathLike, *, pretrained: PathLike,
                         coefficients: Sequence[float], overwrite: bool = False, reads: Sequence[PathLike] = (),
                         model_card: bool = True) -> CatReport:
    """Write ``out``: one adapter whose ΔW is Σ ``coefficients``ᵢ · ΔWᵢ of the PEFT LoRA ``adapters`` (over
    ``pretrained``), exactly, by stacking their factors (PEFT's ``cat``)."""
    started = time.perf_counter()
    paths = [Path(_path(a)) for a in adapters]
    if len(coefficients) != len(paths):
        raise InvalidArgumentError(f"{len(coefficients)} coefficients for {len(paths)} adapters")
    configs = [read_config(p) for p in paths]
    if len({bool(c.get("fan_in_fan_out")) for c in configs}) > 1:
        raise InvalidArgumentError("the adapters disagree on fan_in_fan_out, so their factors do not stack")
    # The engine reads each adapter over the base as a merge does: every module matched to the base's weight, and
    # PEFT's scale of each (α/r or α/√r, α by alpha_pattern).
    scales = [_core.adapter_scales(p, _path(pretrained)) for p in paths]
    stacked = stack([read_factors(p) for p in paths], scales, coefficients)
    base = str(Path(_path(pretrained)).resolve())
    config = adapter_config(stacked, base, bool(configs[0].get("fan_in_fan_out")))
    tensors = {f"{PREFIX}{m}.{suffix}": a for m, (suffix, a, _) in stacked.items()}
    tensors |= {f"{PREFIX}{m}.{FACTORS[suffix]}": b for m, (suffix, _, b) in stacked.items()}
    from safetensors.torch import save_file

    with atomic_output(out, [*paths, _path(pretrained), *map(_path, reads), *protected()], overwrite) as temp:
        save_file(tensors, str(temp / WEIGHTS), metadata={"format": "pt", "generator": generator()})
        (temp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if model_card:
            (temp / "README.md").write_text(card(paths, base, coefficients, config))
    return CatReport(Path(out), paths, list(coefficients), {m: a.shape[0] for m, (_, a, _) in stacked.items()},
                     sum(t.numel() for t in tensors.values()), time.perf_counter() - started)


def card(adapters: list[Path], base: str, coefficients: Sequence[float], config: dict[str, Any]) -> str:
    """The stacked adapter's model card: what it holds, and the command that writes it again."""
    from .model_card import card_yaml, code

    front = {"base_model": base, "library_name": "peft", "tags": ["lora", "merge-rs"]}
    models = " ".join(f"--model {a.resolve()}" for a in adapters)
    again = (f"merge-rs merge task_arithmetic --pretrained {base} {models} --coefficients "
             f"{','.join(f'{c:g}' for c in coefficients)} --out-format peft-cat")
    return "\n".join([
        "---", card_yaml(front, quoted=True).rstrip(), "---", "", "# LoRA adapter", "",
        f"Task arithmetic of {len(adapters)} LoRA adapters, written by {generator()} with their factors stacked "
        f"(PEFT's `cat`): rank {config['r']} for most modules, no truncation.", "", "Write it again with:", "",
        code(again), ""])
