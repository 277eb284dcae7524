"""merge-rs's own recipes: the schema and its JSON Schema, KEY=VALUE overrides, per-model and per-tensor
parameters and layer gradients, dry runs that read no tensor data, bad recipes named by file, line and field,
and model cards whose recipe re-runs to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import merge_rs
from conftest import cli, load, save
from merge_rs.recipes import RecipeError, load_job, prepare, recipe_json_schema


@pytest.fixture
def layered(tmp_path) -> tuple[Path, list[Path]]:
    """θ₀ and two fine-tuned models with three layers (``layers.N.``), an embedding and an integer buffer."""
    rng = np.random.default_rng(3)
    shapes = {**{f"model.layers.{i}.{p}.weight": (6, 5) for i in range(3) for p in ("attn", "mlp")},
              "model.embed.weight": (7, 5)}
    base = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    models = [save(tmp_path / f"ft{i}", {k: v + rng.normal(scale=0.1, size=v.shape).astype(np.float32)
                                          for k, v in base.items()}) for i in range(2)]
    return save(tmp_path / "base", base), models


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def recipe(tmp_path: Path, layered, body: str) -> Path:
    base, (a, b) = layered
    return write(tmp_path / "recipe.yml", f"pretrained: {base}\nmodels:\n  - {a}\n  - {b}\n" + body)


def task_vector_scale(out: Path, layered, name: str) -> float:
    """λ in θ = θ₀ + λ(τ₁ + τ₂) for one tensor of a task-arithmetic output."""
    base, (a, b) = layered
    got, theta0, ta, tb = load(out), load(base), load(a), load(b)
    tau = (ta[name] - theta0[name]) + (tb[name] - theta0[name])
    return float(np.sum((got[name] - theta0[name]) * tau) / np.sum(tau * tau))


def test_overrides_gradients_and_tensor_patterns_give_each_tensor_its_value(tmp_path, layered):
    path = recipe(tmp_path, layered, "method: task_arithmetic\nparameters:\n  scaling_factor: {gradient: [0.2, 0.6]}\n"
                                     "tensors:\n  - match: '*.mlp.*'\n    parameters: {scaling_factor: 0.9}\n")
    cli("run", path, "--out", tmp_path / "out", "parameters.scaling_factor.gradient=[0.1, 0.5]", "--quiet")
    scale = lambda name: task_vector_scale(tmp_path / "out", layered, name)  # noqa: E731
    assert scale("model.embed.weight") == pytest.approx(0.1, abs=1e-6)  # outside the layers: t = 0
    assert scale("model.layers.1.attn.weight") == pytest.approx(0.3, abs=1e-6)
    assert scale("model.layers.2.attn.weight") == pytest.approx(0.5, abs=1e-6)
    assert scale("model.layers.0.mlp.weight") == pytest.approx(0.9, abs=1e-6)


def test_per_model_parameters_fill_the_methods_lists(tmp_path, layered):
    base, (a, b) = layered
    path = write(tmp_path / "r.yml", yaml.safe_dump({
        "method": "task_arithmetic", "pretrained": str(base),
        "models": [{"model": str(a), "parameters": {"coefficients": 0.2}},
                   {"model": str(b), "parameters": {"coefficients": 0.7}}]}))
    cli("run", path, "--out", tmp_path / "ours", "-q")
    merge_rs.merge("task_arithmetic", [a, b], tmp_path / "want", pretrained=base, coefficients=[0.2, 0.7])
    assert (tmp_path / "ours/model.safetensors").read_bytes() == (tmp_path / "want/model.safetensors").read_bytes()


def test_the_card_of_a_recipe_run_re_runs_to_the_same_bytes(tmp_path, layered):
    path = recipe(tmp_path, layered, "method: ties\nparameters: {threshold: 30, scaling_factor: {gradient: [0.3, 0.5]}}\n"
                                     "dtype: bfloat16\n")
    cli("run", path, "--out", tmp_path / "one", "-q")
    card = (tmp_path / "one/README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["tags"] == ["merge", "merge-rs"] and str(layered[0]) in front["base_model"]
    assert "[paper](https://arxiv.org/abs/2306.01708)" in card and "| `merge_func` | `\"sum\"` |" in card
    assert f"merge-rs {merge_rs.__version__}" in card
    cli("run", tmp_path / "one/README.md", "--out", tmp_path / "two", "-q")
    assert (tmp_path / "one/model.safetensors").read_bytes() == (tmp_path / "two/model.safetensors").read_bytes()
    metadata = merge_rs.inspect(tmp_path / "one").metadata
    assert metadata["merge_method"] == "ties" and metadata["merged_by"] == f"merge-rs {merge_rs.__version__}"


def test_merge_writes_the_recipe_of_its_flags_and_no_model_card_turns_it_off(tmp_path, layered):
    base, (a, b) = layered
    cli("merge", "ties", "--pretrained", base, "--model", a, "--model", b, "--threshold", "40", "--trim", "per-tensor",
        "--out", tmp_path / "flags", "-q")
    cli("run", tmp_path / "flags/README.md", "--out", tmp_path / "again", "-q")
    assert (tmp_path / "flags/model.safetensors").read_bytes() == (tmp_path / "again/model.safetensors").read_bytes()
    cli("merge", "ties", "--pretrained", base, "--model", a, "--model", b, "--no-model-card", "--out",
        tmp_path / "bare", "-q")
    cli("run", tmp_path / "flags/README.md", "--no-model-card", "--out", tmp_path / "bare2", "-q")
    assert not (tmp_path / "bare/README.md").exists() and not (tmp_path / "bare2/README.md").exists()


def test_a_dry_run_prints_the_plan_and_reads_no_tensor_data(tmp_path, layered):
    base, (a, b) = layered
    poisoned = load(a)
    poisoned["model.layers.0.attn.weight"][0, 0] = np.nan
    save(tmp_path / "nan", poisoned)
    path = write(tmp_path / "r.yml", f"method: ties\npretrained: {base}\nmodels: [{tmp_path / 'nan'}, {b}]\n"
                                     "tensors:\n  - match: '*.mlp.*'\n    parameters: {threshold: 50}\n")
    shown = cli("run", path, "--dry-run").stdout
    assert "method: ties" in shown and "3 tensors (model.layers.0.mlp.weight [6, 5], …): threshold=50" in shown
    assert "output: 7 tensors (7 merged), 0.0 MB" in shown and "memory: about" in shown
    assert not (tmp_path / "out").exists()
    planned = json.loads(cli("run", path, "--dry-run", "--json").stdout)
    by_name = {t["name"]: t for t in planned["tensors"]}
    assert by_name["model.layers.2.mlp.weight"] == {"name": "model.layers.2.mlp.weight", "shape": [6, 5],
                                                    "dtype": "F32", "parameters": {"threshold": 50}}
    assert by_name["model.embed.weight"]["parameters"] == {} and planned["groups"] == 2
    failed = cli("run", path, "--out", tmp_path / "out", check=False)
    assert failed.returncode == 1 and "NaN" in failed.stderr


BAD_RECIPES = {
    "unknown key": ("method: ties\nmodels: [{a}]\npretrained: {base}\nmodles: 3\n", 4, "modles: unknown field"),
    "wrong type": ("method: ties\nmodels: [{a}]\npretrained: {base}\ndtype: 16\n", 4, "dtype: Input should be"),
    "unknown method": ("method: tyes\nmodels: [{a}]\n", 1, "method: unknown method 'tyes'"),
    "unknown parameter": ("method: ties\npretrained: {base}\nmodels: [{a}]\nparameters:\n  treshold: 3\n", 5,
                          "parameters.treshold: ties has no parameter 'treshold'"),
    "missing model": ("method: ties\npretrained: {base}\nmodels:\n  - {a}\n  - /nowhere/model\n", 5,
                      "models.1: model '/nowhere/model' does not exist"),
    "per-model scalar": ("method: ties\npretrained: {base}\nmodels:\n  - model: {a}\n    parameters: {{threshold: 3}}\n",
                         5, "ties has no per-model parameter 'threshold'"),
    "mergekit slices": ("merge_method: ties\nbase_model: {base}\nslices: []\nmodels: [{{model: {a}}}]\n", 4,
                        "models: a config with slices takes its models from the slices"),
    "mergekit empty slices": ("merge_method: passthrough\nslices: []\n", 2, "slices: slices is a list of"),
    "mergekit layer range": ("merge_method: passthrough\nslices:\n  - sources:\n      - model: {a}\n"
                             "        layer_range: [2, 1]\n", 5, "layer_range is [first, end)"),
    "mergekit modules": ("merge_method: linear\nmodules: {{}}\n", 2, "modules: modules is a mapping of module name"),
    "mergekit modules and models": ("merge_method: linear\nmodules: {{default: {{models: [{{model: {a}}}]}}}}\n"
                                    "models: [{{model: {a}}}]\n", 3, "models: a config has exactly one of models, "),
    "mergekit several modules": ("merge_method: linear\nmodules:\n  text_decoder: {{models: [{{model: {a}}}]}}\n"
                                 "  vision_tower: {{models: [{{model: {a}}}]}}\n", 2,
                                 "per-module merges (text_decoder, vision_tower) are not supported yet"),
    "mergekit module model": ("merge_method: linear\nmodules:\n  default:\n    models:\n      - model: {a}\n"
                              "      - model: /nowhere\n        weight: 1\n", 7, "modules.default.models.1.weight: "
                                                                                "unknown field"),
    "mergekit residual weight": ("merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: [0, 1]}}]\n"
                                 "    residual_weight: lots\n", 4, "slices.0.residual_weight: residual_weight is a number"),
    "mergekit tokenizer twice": ("merge_method: linear\ntokenizer_source: union\ntokenizer: {{source: union}}\n"
                                 "models: [{{model: {a}}}]\n", 3, "tokenizer: give tokenizer_source or tokenizer, not"),
    "mergekit token source": ("merge_method: linear\ntokenizer:\n  tokens:\n    x: {{source: {{kind: one}}}}\n"
                              "models: [{{model: {a}}}]\n", 4, "tokenizer.tokens.x.source: source is a model, {kind"),
    "mergekit slice twice": ("merge_method: linear\nslices:\n  - sources:\n      - {{model: {a}, layer_range: [0, 1]}}\n"
                             "      - {{model: {a}, layer_range: [1, 2]}}\n", 3, "slices.0.sources: a slice lists a model "
                             "twice"),
    "mergekit slice base": ("merge_method: ties\nslices:\n  - sources: [{{model: {a}, layer_range: [0, 1]}}]\n"
                            "    base_model: {base}\n", 4, "slices.0.base_model: with slices, a base model must be one"),
    "mergekit unknown method": ("merge_method: lienar\nmodels: [{{model: {a}}}]\n", 1,
                                "merge_method: merge-rs does not run mergekit's 'lienar'"),
    "mergekit arcee_fusion of two": ("merge_method: arcee_fusion\nbase_model: {base}\nmodels: [{{model: {a}}}, "
                                     "{{model: {a}}}]\n", 3, "models: mergekit's arcee_fusion takes base_model and "
                                     "exactly one other model"),
    "mergekit karcher of one": ("merge_method: karcher\nmodels: [{{model: {a}}}]\n", 2,
                                "models: mergekit's karcher needs two models or more"),
    "mergekit weight": ("merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {a}\n", 4,
                        "mergekit's task_arithmetic needs 'weight'"),
    "mergekit lora base": ("merge_method: task_arithmetic\nbase_model: {base}+lora\nmodels:\n  - model: {a}\n", 2,
                           "base_model: model 'lora' does not exist"),
    "mergekit missing lora": ("merge_method: linear\nmodels:\n  - model: {a}+lora\n    parameters: {{weight: 1}}\n", 3,
                              "models.0.model: model 'lora' does not exist"),
    "not yaml": ("method: [ties\n", 2, "not valid YAML"),
    "mergekit multi-document": ("merge_method: linear\nmodels: [{{model: {a}}}]\n---\nmerge_method: ties\n", 4,
                                "2 documents have no name"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipes_fail_before_reading_with_file_line_and_field(case, tmp_path, layered):
    base, (a, _) = layered
    text, line, message = BAD_RECIPES[case]
    path = write(tmp_path / "bad.yml", text.format(a=a, base=base))
    result = cli("run", path, "--out", tmp_path / "out", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}:{line}: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_layer_gradient_over_a_model_without_layers_is_an_error(tmp_path, models):
    pre, fts, _ = models
    path = write(tmp_path / "r.yml", f"method: task_arithmetic\npretrained: {pre}\nmodels: [{fts[0]}]\n"
                                     "parameters:\n  scaling_factor: {gradient: [0.1, 0.9]}\n")
    with pytest.raises(RecipeError, match=r"r.yml:4: parameters: a layer gradient needs layers"):
        prepare(load_job(path))


@pytest.mark.parametrize("override, message", [
    ("parameters", "is not KEY=VALUE"),
    ("models.7.model=x", "models has no item 7"),
    ("method.name=x", "method is not a mapping"),
])
def test_bad_overrides_are_one_line_errors(override, message, tmp_path, layered):
    path = recipe(tmp_path, layered, "method: ties\n")
    result = cli("run", path, override, "--out", tmp_path / "out", check=False)
    assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_an_override_with_a_bad_value_names_the_command_line(tmp_path, layered):
    path = recipe(tmp_path, layered, "method: ties\n")
    result = cli("run", path, "parameters.threshold=lots", "--out", tmp_path / "out", check=False)
    assert result.returncode == 1 and "parameters.threshold (set on the command line)" in result.stderr


def test_mergekit_fields_that_change_no_weights_warn(tmp_path, layered):
    base, (a, b) = layered
    path = write(tmp_path / "mk.yml", yaml.safe_dump({
        "merge_method": "linear", "chat_template": "chatml",
        "models": [{"model": str(a), "parameters": {"weight": 1.0}}, {"model": str(b), "parameters": {"weight": 3}}]}))
    result = cli("run", path, "--out", tmp_path / "out", "dtype=bfloat16")
    assert "computes in float32" not in result.stderr  # merge-rs replays mergekit's linear in bfloat16
    assert "warning: chat_template" in result.stderr
    got, ta, tb = load(tmp_path / "out"), load(a), load(b)
    want = (ta["model.embed.weight"] + 3 * tb["model.embed.weight"]) / 4
    np.testing.assert_allclose(got["model.embed.weight"], want, rtol=1e-2)
    assert merge_rs.inspect(tmp_path / "out").dtypes == {"BF16": sum(v.size for v in got.values())}


def test_the_json_schema_lists_every_methods_parameters(tmp_path):
    schema = json.loads(cli("recipe-schema").stdout)
    assert schema == recipe_json_schema()
    assert set(schema["properties"]["method"]["enum"]) == set(merge_rs.METHODS)
    ties = next(rule["then"] for rule in schema["allOf"] if rule["if"]["properties"]["method"]["const"] == "ties")
    threshold = ties["properties"]["parameters"]["properties"]["threshold"]
    assert threshold["default"] == 20.0 and {"$ref": "#/$defs/LayerGradient"} in threshold["anyOf"]
    assert ties["properties"]["parameters"]["additionalProperties"] is False
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("field, value, message", [
    ("threshold", "{gradient: [10, 200]}", "expected a number in [0.0, 100.0], got 200"),
    ("merge_func", "avg", "expected one of sum, mean, max"),
    ("trim", "true", "expected one of global, per-tensor, got True"),
])
def test_parameter_values_are_checked_against_their_declarations(field, value, message, tmp_path, layered):
    path = recipe(tmp_path, layered, f"method: ties\nparameters:\n  {field}: {value}\n")
    result = cli("run", path, "--out", tmp_path / "out", check=False)
    assert result.returncode == 1 and f"r{''}ecipe.yml:7: parameters.{field}: {message}" in result.stderr, result.stderr


@pytest.mark.slow
def test_the_example_recipe_merges_the_zoo_and_evaluates_it(tmp_path):
    example = Path(__file__).parent.parent / "examples" / "zoo-ties.yml"
    report = json.loads(cli("run", example, "--out", tmp_path / "zt", "--json", "-q").stdout)
    assert report["method"] == "ties" and len(report["tensor_groups"]) == 7
    assert {"mnist", "digits", "fashion_mnist", "symbols", "average"} <= set(report["evaluation"])
    assert "```yaml merge-rs-recipe\nmethod: ties\npool: zoo\n" in (tmp_path / "zt/README.md").read_text()


def test_hub_ids_resolve_from_the_local_hub_cache(tmp_path, layered, monkeypatch):
    import shutil

    base, (a, b) = layered
    cache = tmp_path / "hub"
    for name, source in [("base", base), ("a", a), ("b", b)]:
        repo = cache / f"models--org--{name}"
        shutil.copytree(source, repo / "snapshots" / "0123abcd")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    path = write(tmp_path / "hub.yml", "method: task_arithmetic\npretrained: org/base\nmodels: [org/a, org/b]\n")
    cli("run", path, "--out", tmp_path / "ours", "-q")
    merge_rs.merge("task_arithmetic", [a, b], tmp_path / "want", pretrained=base)
    assert (tmp_path / "ours/model.safetensors").read_bytes() == (tmp_path / "want/model.safetensors").read_bytes()
    missing = write(tmp_path / "gone.yml", "method: task_arithmetic\npretrained: org/base\nmodels: [org/none]\n")
    result = cli("run", missing, "--out", tmp_path / "x", check=False)
    assert "gone.yml:3: models.0: model 'org/none' is neither a local path nor in the hub cache" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["task", "layer"])
def test_an_adamerging_output_has_a_card_that_re_runs_its_merge(mode, tmp_path):
    cli("adamerging", "--pool", "zoo", "--mode", mode, "--steps", "2", "--out", tmp_path / "learned", "-q")
    card = (tmp_path / "learned/README.md").read_text()
    assert f"learned by AdaMerging ({mode}-wise, 2 steps)" in card and "method: task_arithmetic" in card
    cli("run", tmp_path / "learned/README.md", "--out", tmp_path / "again", "-q")
    learned, again = load(tmp_path / "learned"), load(tmp_path / "again")
    assert learned.keys() == again.keys() and all(np.array_equal(learned[k], again[k]) for k in learned)
    if mode == "task":  # layer-wise, the header records where the weights file was when the merge ran
        assert (tmp_path / "learned/model.safetensors").read_bytes() == \
            (tmp_path / "again/model.safetensors").read_bytes()


def test_a_pool_file_is_found_beside_the_recipe(tmp_path, layered):
    base, (a, b) = layered
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/pool.json").write_text(json.dumps({"pretrained": str(base), "models": {"a": str(a),
                                                                                              "b": str(b)}}))
    path = write(tmp_path / "recipes/r.yml", "method: task_arithmetic\npool: pool.json\n")
    cli("run", path, "--out", tmp_path / "out", "-q")
    merge_rs.merge("task_arithmetic", [a, b], tmp_path / "want", pretrained=base)
    assert (tmp_path / "out/model.safetensors").read_bytes() == (tmp_path / "want/model.safetensors").read_bytes()
