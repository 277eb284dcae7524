"""Report objects returned by the Python API, built from the engine's JSON reports. Parsing is tolerant:
fields this version does not know go to ``extra`` instead of failing, so a newer engine never breaks them."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any], **converted: Any) -> T:
    """``cls`` from the fields of ``data`` it declares (``converted`` replacing some); the rest go to ``extra``."""
    names = {f.name for f in fields(cls)} - {"extra"}  # type: ignore[arg-type]
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    return cls(**{**known, **converted}, extra=extra)  # type: ignore[call-arg]


@dataclass(frozen=True)
class InputModel:
    """A model that took part in a merge."""

    name: str
    path: Path
    layout: str


@dataclass(frozen=True)
class MergeReport:
    """What a merge did."""

    method: str
    parameters: dict[str, Any]
    pretrained: InputModel | None
    models: list[InputModel]
    tensors: int
    merged_tensors: int
    copied_tensors: int
    parameters_merged: int
    nonfinite_inputs: int
    nonfinite_outputs: int
    output: Path
    output_files: list[Path]
    output_bytes: int
    threads: int
    seconds: float
    ties_thresholds: list[float] | None = None
    ties_majority_sign: int | None = None
    tensor_groups: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MergeReport:
        model = lambda m: InputModel(m["name"], Path(m["path"]), m["layout"])  # noqa: E731
        return _build(
            cls,
            data,
            pretrained=model(data["pretrained"]) if data.get("pretrained") else None,
            models=[model(m) for m in data["models"]],
            output=Path(data["output"]),
            output_files=[Path(p) for p in data["output_files"]],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint."""

    name: str
    dtype: str
    shape: list[int]
    parameters: int
    bytes: int
    shard: str
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint holds, from its headers."""

    path: Path
    name: str
    layout: str
    layout_description: str
    tensor_count: int
    parameters: int
    bytes: int
    dtypes: dict[str, int]
    shards: list[dict[str, Any]]
    metadata: dict[str, str]
    config: Path | None
    tensors: list[TensorInfo] = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointInfo:
        return _build(
            cls,
            data,
            path=Path(data["path"]),
            config=Path(data["config"]) if data.get("config") else None,
            tensors=[_build(TensorInfo, t) for t in data["tensors"]],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class CosineSimilarity:
    """Pairwise cosine similarity of task vectors (float64)."""

    names: list[str]
    paths: list[Path]
    matrix: list[list[float | None]]
    norms: list[float]
    parameters: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CosineSimilarity:
        return _build(cls, data, paths=[Path(p) for p in data["paths"]])

    def to_csv(self, corner: str = "") -> str:
        """The matrix as CSV with model names on both axes (FusionBench's layout; ``nan`` where undefined);
        ``corner`` fills the top-left cell (the CLI writes merge-rs's mark there)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([corner, *self.names])
        for name, row in zip(self.names, self.matrix):
            writer.writerow([name, *("nan" if v is None else repr(float(v)) for v in row)])
        return out.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    """Paths as strings, and each report's ``extra`` fields back in place."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        flat = {k: v for k, v in value.items() if k != "extra"}
        flat.update(value.get("extra") or {})
        return {k: _jsonable(v) for k, v in flat.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


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
