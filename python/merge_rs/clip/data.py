"""Image-classification datasets from the hub or from local files, as (image, label) pairs.

A source is one of:
- a Hugging Face hub id (``tanganke/eurosat``), loaded with ``datasets.load_dataset`` (cache-aware; with
  ``HF_HUB_OFFLINE=1`` only what is cached);
- a directory written by ``save_to_disk`` (a ``DatasetDict`` or a single ``Dataset``), read with ``load_from_disk``;
- parquet: a ``.parquet`` file, or a directory holding ``{split}.parquet``, ``{split}-*.parquet`` or ``{split}/*.parquet``
  (also under ``data/``, the hub's layout);
- an image folder: ``root/{split}/{class}/*.png`` or ``root/{class}/*.png``.
The image column is the first ``Image`` feature (or one named ``image``/``img``); the label column is the first
``ClassLabel`` (or one named ``label``/``labels``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_COLUMNS = ("image", "img", "images")
LABEL_COLUMNS = ("label", "labels", "fine_label")


@dataclass
class LabeledImages:
    """A dataset split with the names of its image and label columns, and its class names when it has them."""

    dataset: Any  # datasets.Dataset
    image_column: str
    label_column: str
    label_names: list[str] | None

    def __len__(self) -> int:
        return len(self.dataset)

    def head(self, limit: int | None) -> "LabeledImages":
        if limit is None or limit >= len(self.dataset):
            return self
        return LabeledImages(self.dataset.select(range(limit)), self.image_column, self.label_column, self.label_names)


def load_split(source: str | Path, split: str) -> LabeledImages:
    """Load one split of an image-classification dataset (see the module doc for what ``source`` may be)."""
    dataset = _load(str(source), split)
    return _describe(dataset, str(source))


def _load(source: str, split: str):
    import datasets

    from .models import quiet_library_progress

    quiet_library_progress()
    path = Path(source).expanduser()
    if not path.exists():
        if source.startswith((".", "/", "~")) or source.endswith(".parquet"):
            raise FileNotFoundError(f"dataset not found: {source}")
        try:
            return datasets.load_dataset(source, split=split)
        except Exception as e:  # offline and not cached, unknown id, missing split
            raise ValueError(f"cannot load dataset '{source}' (split '{split}') from the Hugging Face hub or its "
                             f"cache: {e}") from None
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{path}: expected a .parquet file or a dataset directory")
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        loaded = datasets.load_from_disk(str(path))
        return _pick_split(loaded, split, path)
    files = _parquet_files(path, split)
    if files:
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    if any(path.rglob("*.parquet")):
        raise ValueError(f"{path}: no parquet files for split '{split}'")
    root = path / split if (path / split).is_dir() else path
    return datasets.load_dataset("imagefolder", data_dir=str(root), split="train")


def _pick_split(loaded, split: str, path: Path):
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded
    if split not in loaded:
        raise ValueError(f"{path}: no split '{split}' (it has {', '.join(loaded)})")
    return loaded[split]


def _parquet_files(path: Path, split: str) -> list[Path]:
    for base in (path, path / "data"):
        for pattern in (f"{split}.parquet", f"{split}-*.parquet", f"{split}/*.parquet"):
            found = sorted(base.glob(pattern))
            if found:
                return found
    return []


def _describe(dataset, source: str) -> LabeledImages:
    import datasets

    features = dataset.features
    image = next((n for n, f in features.items() if isinstance(f, datasets.Image)), None)
    image = image or next((n for n in IMAGE_COLUMNS if n in features), None)
    label = next((n for n, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    label = label or next((n for n in LABEL_COLUMNS if n in features), None)
    if image is None or label is None:
        raise ValueError(f"dataset '{source}' needs an image column and a label column; it has "
                         f"{', '.join(features)}")
    names = features[label].names if isinstance(features[label], datasets.ClassLabel) else None
    return LabeledImages(dataset, image, label, names)
