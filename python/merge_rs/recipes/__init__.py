"""Recipes: YAML merge configs in merge-rs's own schema or mergekit's (both of its schemas), with ``KEY=VALUE``
overrides, per-tensor parameters, dry runs, and a model card in every output."""

from .runner import describe, execute, load_job, prepare
from .schema import Recipe, recipe_json_schema
from .source import RecipeError

__all__ = ["Recipe", "RecipeError", "describe", "execute", "load_job", "prepare", "recipe_json_schema"]
