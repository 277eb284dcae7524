"""Model pools: a pretrained CLIP plus one fine-tuned vision encoder per task, by hub id or local directory.

Presets follow FusionBench's names: ``clip-vit-base-patch32_TA8`` is ``openai/clip-vit-base-patch32`` with
``tanganke/clip-vit-base-patch32_<task>`` for the eight tasks (also ``-base-patch16`` and ``-large-patch14``), and
``zoo`` is the small offline zoo that ships with merge-rs. A pool can also be a JSON file::

    {"pretrained": "openai/clip-vit-base-patch32",
     "models": {"mnist": "path/to/clip-mnist", "eurosat": "tanganke/clip-vit-base-patch32_eurosat"},
     "datasets": {"mnist": "path/to/mnist-parquet-dir"}}

A model may be a PEFT LoRA adapter over the pretrained model. Relative paths in a file resolve against the file's
directory. Hub ids resolve through ``huggingface_hub`` (its cache is used; with ``HF_HUB_OFFLINE=1`` nothing is
downloaded). The pool hands paths to the Rust engine and ``nn.Module``s to torch code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .tasks import EIGHT_TASKS, get_task

HUB_FILES = ["*.json", "*.safetensors", "*.txt"]
CLIP_ARCHITECTURES = ("base-patch32", "base-patch16", "large-patch14")


@dataclass
class ModelPool:
    """What a merge and its evaluation need: the pretrained model, the task models, and each task's data."""

    name: str
    pretrained: str
    models: dict[str, str]
    datasets: dict[str, str] = field(default_factory=dict)
    base: Path | None = None
    source: Path | None = None

    @property
    def tasks(self) -> list[str]:
        return list(self.models)

    def resolve(self, reference: str) -> Path:
        """A local directory for a path or hub id (downloaded into, or found in, the hub cache)."""
        return resolve_model(reference, self.base)

    def pretrained_path(self) -> Path:
        return self.resolve(self.pretrained)

    def model_path(self, task: str) -> Path:
        if task not in self.models:
            raise ValueError(f"pool '{self.name}' has no model for task '{task}' (it has {', '.join(self.models)})")
        return self.resolve(self.models[task])

    def model_paths(self) -> list[Path]:
        return [self.model_path(t) for t in self.models]

    def base_for(self, needs_pretrained: bool) -> Path | None:
        """The pretrained model to hand a merge: when the method needs it, or when a model is a LoRA adapter (read
        over it)."""
        from ..lora import is_adapter

        if needs_pretrained or any(is_adapter(p) for p in self.model_paths()):
            return self.pretrained_path()
        return None

    def input_paths(self) -> list[Path]:
        """Every local path the pool reads (its file, or its zoo directory; models, datasets): outputs must not
        overlap them."""
        paths = [self.source] if self.source is not None else [self.base] if self.base else []
        for reference in (self.pretrained, *self.models.values(), *self.datasets.values()):
            local = (self.base / reference) if self.base and not Path(reference).is_absolute() else Path(reference)
            if local.exists():
                paths.append(local)
        return paths

    def dataset_source(self, task: str) -> str:
        """Where the task's data comes from: the pool's own, else the task's hub dataset."""
        if task in self.datasets:
            source = self.datasets[task]
            local = (self.base / source) if self.base and not Path(source).is_absolute() else Path(source)
            return str(local) if local.exists() else source
        dataset = get_task(task).dataset
        if dataset is None:
            raise ValueError(f"task '{task}' has no default dataset; give one as --task {task}=PATH")
        return dataset

    def load_clip(self):
        """(CLIPModel, CLIPProcessor) of the pretrained model."""
        from .models import load_clip

        return load_clip(self.pretrained_path())

    def load_vision(self, task: str):
        from .models import load_vision_encoder

        return load_vision_encoder(self.model_path(task), base=self.pretrained_path())


def resolve_model(reference: str | Path, base: Path | None = None) -> Path:
    path = Path(reference).expanduser()
    if base is not None and not path.is_absolute() and (base / path).exists():
        return base / path
    if path.exists():
        return path
    text = str(reference)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model not found: {text} (neither a local path nor a hub id like owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=HUB_FILES))
    except Exception as e:  # offline and not cached, unknown repository, network failure
        raise FileNotFoundError(f"cannot get '{text}' from the Hugging Face hub or its local cache "
                                f"({type(e).__name__}: {e})") from None


def zoo_directory() -> Path:
    """Where the offline zoo that ships inside the package lives."""
    return Path(str(resources.files("merge_rs") / "zoo" / "data"))


def zoo_pool(directory: Path | None = None, lora: bool = False) -> ModelPool:
    """The zoo's full fine-tunes, or with ``lora`` its LoRA adapters (``zoo-lora``)."""
    directory = directory or zoo_directory()
    manifest = json.loads((directory / "zoo.json").read_text())
    if lora and "adapters" not in manifest:
        raise ValueError(f"the zoo in {directory} has no LoRA adapters (it was built before they were added)")
    models = manifest["adapters"] if lora else manifest["models"]
    return ModelPool("zoo-lora" if lora else "zoo", manifest["pretrained"], dict(models), dict(manifest["datasets"]),
                     directory)


def lora_twin(pool: ModelPool) -> ModelPool | None:
    """The LoRA pool beside a zoo pool (the same tasks and data, adapters for models), if it has one."""
    if pool.name != "zoo" or pool.base is None:
        return None
    try:
        return zoo_pool(pool.base, lora=True)
    except ValueError:  # a zoo built before the adapters
        return None


def clip_ta8_pool(architecture: str) -> ModelPool:
    return ModelPool(
        f"clip-vit-{architecture}_TA8",
        f"openai/clip-vit-{architecture}",
        {task: f"tanganke/clip-vit-{architecture}_{task}" for task in EIGHT_TASKS},
    )


PRESETS = ["zoo", "zoo-lora", *(f"clip-vit-{a}_TA8" for a in CLIP_ARCHITECTURES)]


def get_pool(name: str | Path) -> ModelPool:
    """A preset by name, a JSON pool file, or a zoo directory (one with ``zoo.json``)."""
    text = str(name)
    if text in ("zoo", "zoo-lora"):
        return zoo_pool(lora=text == "zoo-lora")
    for arch in CLIP_ARCHITECTURES:
        if text == f"clip-vit-{arch}_TA8":
            return clip_ta8_pool(arch)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "zoo.json").exists():
        return zoo_pool(path)
    if path.is_file():
        return _pool_from_file(path)
    raise ValueError(f"unknown pool '{text}': give a preset ({', '.join(PRESETS)}) or a JSON pool file")


def _pool_from_file(path: Path) -> ModelPool:
    try:
        spec: dict[str, Any] = json.loads(path.read_text())
        _check_pool_types(path, spec)
        return ModelPool(spec.get("name", path.stem), spec["pretrained"], dict(spec["models"]),
                         dict(spec.get("datasets", {})), path.parent, source=path)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a pool file ({type(e).__name__}: {e}); it needs 'pretrained' and "
                         f"'models': {{task: model}}") from None


def _check_pool_types(path: Path, spec: Any) -> None:
    """A pool file's fields have the types they are used as (a wrong one is a one-line error, not a traceback)."""
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a pool file is a JSON object with 'pretrained' and 'models'")
    missing = [key for key in ("pretrained", "models") if key not in spec]
    if missing:
        raise ValueError(f"{path}: not a pool file (no '{missing[0]}'); it needs 'pretrained' and "
                         "'models': {task: model}")
    if not isinstance(spec.get("pretrained"), str):
        raise ValueError(f"{path}: 'pretrained' must be a path or hub id (a string)")
    for key in ("models", "datasets"):
        value = spec.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ValueError(f"{path}: '{key}' must map task names to paths or hub ids ({{\"task\": \"path\"}})")
