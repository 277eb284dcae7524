"""LoRA extraction: a fine-tune's change from its base as a PEFT adapter (``extract_lora``), with its report and
model card. Merging adapters needs nothing here: ``merge_rs.merge`` reads them as models."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import _core
from .api import PathLike, _path
from .progress import ProgressBar, ProgressCallback, progress_callback
from .reports import _build, _jsonable


@dataclass(frozen=True)
class ExtractedModule:
    """One module of an extracted adapter."""

    module: str
    shape: list[int]
    rank: int
    energy: float  # share of ‖τ‖²_F the kept directions hold
    relative_error: float  # ‖τ − ΔW‖_F / ‖τ‖_F
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ExtractReport:
    """What ``extract_lora`` wrote."""

    model: Path
    base: Path
    output: Path
    modules: list[ExtractedModule]
    left_out: list[dict[str, Any]]  # changed tensors an adapter cannot hold: {tensor, relative_change}
    unchanged: int
    parameters: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExtractReport:
        return _build(cls, data, model=Path(data["model"]), base=Path(data["base"]), output=Path(data["output"]),
                      modules=[_build(ExtractedModule, m) for m in data["modules"]])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return _jsonable(asdict(self))


def extract_lora(model: PathLike, out: PathLike, *, pretrained: PathLike, rank: int, energy: float | None = None,
                 overwrite: bool = False, progress: bool | ProgressCallback = False,
                 model_card: bool = True) -> ExtractReport:
    """Write ``out``: a PEFT LoRA adapter whose ΔW is the best rank-``rank`` approximation of ``model`` −
    ``pretrained`` for every 2-D weight that is not an embedding (a truncated SVD, one matrix at a time). With
    ``energy``, each module keeps the fewest directions (at most ``rank``) holding that share of ‖τ‖²_F. Other
    changed tensors (biases, norms, embeddings) cannot be held by LoRA: the report lists them."""
    request = {"model": _path(model), "pretrained": _path(pretrained), "out": _path(out), "rank": rank,
               "energy": energy, "overwrite": overwrite,
               "files": [("README.md", adapter_card(model, pretrained, rank, energy))] if model_card else []}
    callback = progress_callback(progress)
    try:
        data = _core.extract_lora(json.dumps(request), callback)
    finally:
        if isinstance(callback, ProgressBar):
            callback.close()
    return ExtractReport.from_json(json.loads(data))


def adapter_card(model: PathLike, pretrained: PathLike, rank: int, energy: float | None) -> str:
    """The adapter's model card: the base it adapts, what it was extracted from, and how to redo it."""
    from ._core import __version__
    from .model_card import card_yaml, code

    base = str(Path(pretrained).resolve()) if Path(pretrained).exists() else str(pretrained)
    source = str(Path(model).resolve()) if Path(model).exists() else str(model)
    front = {"base_model": base, "library_name": "peft", "tags": ["lora", "merge-rs"]}
    again = f"merge-rs extract-lora {source} --pretrained {base} --rank {rank}" + (
        f" --rank-energy {energy}" if energy is not None else "")
    return "\n".join([
        "---", card_yaml(front, quoted=True).rstrip(), "---", "", "# LoRA adapter", "",
        f"Extracted with merge-rs {__version__} from {code(source)} (its change from {code(base)}), by a truncated "
        f"SVD of each linear weight's change: rank {rank}"
        + (f" at most, the fewest directions holding {energy:g} of its energy" if energy is not None else "") + ".",
        "", "Extract it again with:", "", code(again), "",
    ])
