"""merge-rs's own recipe: one YAML file naming the method and its parameters, the models (paths, hub ids
or a pool), per-model and per-tensor parameters, the output dtype and shard size, and an evaluation. Its
JSON Schema is generated from the engine's method table, so editors can complete every method's
parameters."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from ..methods import METHODS
from ..methods.table import Parameter

Scalar = Union[bool, int, float, str]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayerGradient(Strict):
    """Values at evenly spaced layers, interpolated linearly over the layer index (as mergekit's gradients)."""

    gradient: list[Scalar] = Field(min_length=1)


Setting = Union[Scalar, list[Scalar], LayerGradient]


class ModelEntry(Strict):
    """A fine-tuned model with its own values of the method's per-model parameters (``weights: 0.7``)."""

    model: str = Field(description="A path (HF directory, .safetensors file, index or PEFT LoRA adapter) or a hub id.")
    lora: str | None = Field(default=None, description="A PEFT LoRA adapter read over this model (mergekit's "
                                                       "model+lora).")
    parameters: dict[str, Setting] = Field(default_factory=dict)


class TensorOverride(Strict):
    """Other parameter values for the tensors whose name matches ``match`` (a glob; the last match wins)."""

    match: str = Field(description="A glob over tensor names, e.g. '*.mlp.*' or 'vision_model.encoder.layers.1[0-1].*'.")
    parameters: dict[str, Setting]


class Evaluation(Strict):
    """Zero-shot CLIP evaluation after the merge (needs a pool, or a full CLIP as the pretrained model)."""

    tasks: list[str] = Field(default_factory=list, description="NAME or NAME=DATASET; default: the pool's.")
    split: str = "test"
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=128, ge=1)
    device: str = "auto"
    report: str | None = Field(default=None, description="Write FusionBench's report here (JSON).")


class Recipe(Strict):
    """A merge, as merge-rs runs it."""

    method: str = Field(description="A merge-rs method (merge-rs methods lists them).")
    parameters: dict[str, Setting] = Field(default_factory=dict,
                                           description="The method's parameters; a {gradient: [...]} varies by layer.")
    pretrained: str | None = Field(default=None, description="θ₀: a path or a hub id.")
    models: list[Union[str, ModelEntry]] = Field(default_factory=list)
    pool: str | None = Field(default=None, description="A model pool (preset or JSON file) giving θ₀ and the models.")
    tensors: list[TensorOverride] = Field(default_factory=list)
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    max_shard_size: Union[int, str] = "5GB"
    out: str | None = Field(default=None, description="Output directory (--out overrides it).")
    evaluation: Evaluation | None = None


def recipe_json_schema() -> dict[str, Any]:
    """The JSON Schema of a recipe, with each method's parameters (types, defaults, help) from the table."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "merge-rs recipe"
    schema["properties"]["method"]["enum"] = list(METHODS)
    schema["allOf"] = [
        {
            "if": {"properties": {"method": {"const": m.name}}, "required": ["method"]},
            "then": {"properties": {"parameters": {
                "type": "object",
                "description": m.summary,
                "properties": {p.name: _parameter_schema(p) for p in m.parameters},
                "additionalProperties": False,
            }}},
        }
        for m in METHODS.values()
    ]
    return schema


def _parameter_schema(p: Parameter) -> dict[str, Any]:
    gradient = {"$ref": "#/$defs/LayerGradient"}
    number: dict[str, Any] = {"type": "number"}
    if p.minimum is not None:
        number["minimum"] = p.minimum
    if p.maximum is not None:
        number["maximum"] = p.maximum
    kinds: dict[str, list[dict[str, Any]]] = {
        "f32": [number, gradient], "f64": [number, gradient], "u64": [{"type": "integer", "minimum": 0}],
        "bool": [{"type": "boolean"}], "choice": [{"enum": list(p.choices)}],
        "float_list": [{"type": "array", "items": {"type": "number"}}],
        "float_or_list": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}, gradient],
        "name_list": [{"type": "array", "items": {"type": "string"}}],
        "path": [{"type": "string"}], "path_list": [{"type": "array", "items": {"type": "string"}}],
    }
    out: dict[str, Any] = {"description": p.help, "anyOf": kinds.get(p.kind, [{}])}
    if not p.required and p.default is not None:
        out["default"] = p.default
    return out
