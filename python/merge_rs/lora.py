"""LoRA extraction: a fine-tune's change from its base as a PEFT adapter (``extract_lora``), with its report and
model card. Merging adapters needs nothing here: ``merge_rs.merge`` reads them as models."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _core
from .api import ModelInput, PathLike, _path
from .output import protected
from .progress import ProgressCallback, with_progress
from .reports import ExtractReport


def is_adapter(path: PathLike) -> bool:
    """Whether ``path`` is a PEFT adapter directory."""
    return Path(path).is_dir() and (Path(path) / "adapter_config.json").is_file()


def extract_lora(model: PathLike, out: PathLike, *, pretrained: PathLike, rank: int, energy: float | None = None,
                 overwrite: bool = False, progress: bool | ProgressCallback = False,
                 model_card: bool | str = True, reads: Sequence[PathLike] = ()) -> ExtractReport:
    """Write ``out``: a PEFT LoRA adapter whose ΔW is the best rank-``rank`` approximation of ``model`` −
    ``pretrained`` for every 2-D weight that is not an embedding (a truncated SVD, one matrix at a time). With
    ``energy``, each module keeps the fewest directions (at most ``rank``) holding that share of ‖τ‖²_F. Other
    changed tensors (biases, norms, embeddings) cannot be held by LoRA: the report lists them. ``model_card`` is
    False for none, or the card's text; ``reads`` names other inputs the output must not overlap."""
    card = model_card if isinstance(model_card, str) else adapter_card(model, pretrained, rank, energy)
    request = {"model": _path(model), "pretrained": _path(pretrained), "out": _path(out), "rank": rank,
               "energy": energy, "overwrite": overwrite, "reads": [*(_path(r) for r in reads), *protected()],
               "files": [("README.md", card)] if model_card else []}
    data = with_progress(progress, lambda callback: _core.extract_lora(json.dumps(request), callback))
    return ExtractReport.from_json(json.loads(data))


def adapter_card(model: PathLike, pretrained: PathLike, rank: int, energy: float | None,
                 merged: str | None = None) -> str:
    """The adapter's model card: the base it adapts, what it was extracted from (a model, or the ``merged``
    models), and how to redo an extraction."""
    from ._core import __version__
    from .model_card import card_yaml, code

    base = str(Path(pretrained).resolve()) if Path(pretrained).exists() else str(pretrained)
    source = str(Path(model).resolve()) if Path(model).exists() else str(model)
    front = {"base_model": base, "library_name": "peft", "tags": ["lora", "merge-rs"]}
    again = f"merge-rs extract-lora {source} --pretrained {base} --rank {rank}" + (
        f" --rank-energy {energy}" if energy is not None else "")
    what = f"the merge ({code(merged)})" if merged else code(source)
    return "\n".join([
        "---", card_yaml(front, quoted=True).rstrip(), "---", "", "# LoRA adapter", "",
        f"Extracted with merge-rs {__version__} from {what} (its change from {code(base)}), by a truncated "
        f"SVD of each linear weight's change: rank {rank}"
        + (f" at most, the fewest directions holding {energy:g} of its energy" if energy is not None else "") + ".",
        *([] if merged else ["", "Extract it again with:", "", code(again)]), "",
    ])


def merge_to_adapter(method: str, models: Sequence[ModelInput], out: PathLike, *, pretrained: PathLike, rank: int,
                     energy: float | None = None, overwrite: bool = False, progress: bool | ProgressCallback = False,
                     model_card: bool = True, reads: Sequence[PathLike] = (), **parameters: Any) -> ExtractReport:
    """Merge ``models`` with ``method`` (as ``merge_rs.merge``), and write the merged task vector as a PEFT LoRA
    adapter of rank ``rank`` (PEFT's ``svd`` family, for any method): the merge goes to a temporary full model
    beside ``out``, removed afterwards, then ``extract_lora`` truncates each module by SVD."""
    from .api import merge

    inputs = [_path(p) for m in models for p in (m if isinstance(m, tuple) else (m,))]
    _core.check_output(_path(out), [*inputs, _path(pretrained), *map(_path, reads), *protected()], overwrite)
    parent = Path(out).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{Path(out).name}.merge-rs-full-", dir=parent))
    try:
        merge(method, models, scratch / "merged", pretrained=pretrained, progress=progress, model_card=False,
              reads=reads, **parameters)
        names = ", ".join(Path(p).name for p in inputs)
        card = adapter_card(scratch / "merged", pretrained, rank, energy, merged=f"{method} of {names}") \
            if model_card else False
        return extract_lora(scratch / "merged", out, pretrained=pretrained, rank=rank, energy=energy,
                            overwrite=overwrite, progress=progress, model_card=card, reads=[*inputs, *reads])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
