"""Property-based fuzzing of the recipe reader and the KEY=VALUE overrides (bounded like the engine's fuzzing:
300 examples a property, derandomized so that CI is repeatable): whatever the text, loading a recipe works or raises
what the CLI prints as one line (never a TypeError, KeyError or RecursionError), and never runs away."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import yaml

from merge_rs.exceptions import MergeRsError
from merge_rs.recipes import load_job

FIELDS = ["method", "merge_method", "models", "pretrained", "base_model", "parameters", "dtype", "pool", "out",
          "tensors", "evaluation", "max_shard_size", "slices", "weight", "&a", "*a", "- ", "{", "[", ":", "\n", "  ",
          "task_arithmetic", "ties", "linear", "0.3", "-1", ".nan", "1e23", "!!python/object", "```yaml"]
TEXT = st.lists(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), max_size=40).map("".join)
OVERRIDE = st.tuples(st.lists(st.sampled_from(["parameters", "models", "0", "weight", "x", "évaluation", "\x1b"]),
                              min_size=1, max_size=4).map(".".join), TEXT).map("=".join)
KEYS = ["method", "merge_method", "models", "model", "pretrained", "base_model", "parameters", "dtype", "out_dtype",
        "pool", "tensors", "match", "evaluation", "tasks", "split", "device", "max_shard_size", "weight", "density",
        "scaling_factor", "tokenizer_source"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**25), st.floats(allow_nan=True),
                    st.sampled_from(["task_arithmetic", "ties", "linear", "zoo", "float32", "bf16", "a", "b", "5GB"]),
                    st.text(max_size=6))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)
MERGEKIT = ["merge_method", "models", "base_model", "parameters", "dtype", "out_dtype", "tokenizer_source"]
OWN = ["method", "models", "pretrained", "parameters", "dtype", "pool", "tensors", "evaluation", "max_shard_size"]
DOCUMENTS = st.one_of(*(st.fixed_dictionaries({keys[0]: VALUES}, optional={k: VALUES for k in keys[1:]})
                        for keys in (MERGEKIT, OWN))).map(lambda d: yaml.safe_dump(d, sort_keys=False,
                                                                                    allow_unicode=True))
BOUNDED = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _load(path: Path, overrides: list[str]) -> None:
    started = time.perf_counter()
    try:
        load_job(path, overrides)
    except (MergeRsError, OSError, ValueError):
        pass  # what the CLI prints as one line (merge-rs's errors, a missing file, a bad value)
    assert time.perf_counter() - started < 5, "a small recipe took seconds to read"


@BOUNDED
@given(text=st.one_of(DOCUMENTS, TEXT))
def test_any_recipe_text_is_read_or_refused(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yml"
    path.write_text(text, encoding="utf-8")
    _load(path, [])


@BOUNDED
@given(overrides=st.lists(OVERRIDE, max_size=3))
def test_any_override_is_applied_or_refused(tmp_path_factory, overrides):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yml"
    path.write_text("method: task_arithmetic\nmodels: [a, b]\nparameters: {scaling_factor: 0.3}\n")
    _load(path, overrides)
