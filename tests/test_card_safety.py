"""A model card is an output that others will run: what came from inputs (paths, tensor names) cannot add a recipe
to it, ``merge-rs run CARD`` takes exactly one recipe block, and a card never chooses where files are written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import cli, save

INJECTED = "\n```yaml\nmethod: simple_average\n```\n"


def _models(tmp_path, name: str):
    base = {"w": np.ones((4, 3), np.float32)}
    pre = save(tmp_path / "pre", base)
    a = save(tmp_path / name, {"w": base["w"] + 1})
    b = save(tmp_path / "b", {"w": base["w"] + 2})
    return pre, a, b


@pytest.mark.parametrize("parent", ["", "a-directory-name-long-enough-to-make-yaml-fold-the-line/" * 2])
def test_a_path_with_a_fence_in_it_cannot_add_a_recipe_to_the_card(tmp_path, parent):
    tmp_path = tmp_path / parent
    pre, a, b = _models(tmp_path, "evil" + INJECTED)
    cli("merge", "task_arithmetic", "--pretrained", pre, "--model", a, "--model", b, "--out", tmp_path / "out",
        "--quiet")
    card = (tmp_path / "out" / "README.md").read_text()
    fences = [line for line in card.splitlines() if re.match(r" {0,3}(```|~~~)", line)]
    assert fences == ["```yaml merge-rs-recipe", "```"], fences
    plan = json.loads(cli("run", tmp_path / "out" / "README.md", "--out", tmp_path / "again", "--dry-run",
                          "--json").stdout)
    assert plan["method"] == "task_arithmetic" and str(a) in [m["path"] for m in plan["inputs"]]
    cli("run", tmp_path / "out" / "README.md", "--out", tmp_path / "again", "--quiet")  # and it runs as it was


def test_a_card_with_more_than_one_recipe_block_is_refused(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("# card\n\n```yaml\nmethod: task_arithmetic\n```\n\n```yaml\nmethod: simple_average\n```\n")
    result = cli("run", card, "--out", tmp_path / "out", check=False)
    assert result.returncode == 1 and "holds 2 recipe blocks" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_card_does_not_choose_where_files_go(tmp_path):
    pre, a, b = _models(tmp_path, "a")
    elsewhere = tmp_path / "elsewhere"
    card = tmp_path / "card" / "README.md"
    card.parent.mkdir()
    card.write_text(f"# card\n\n```yaml merge-rs-recipe\nmethod: task_arithmetic\npretrained: {pre}\nmodels: [{a}, {b}]"
                    f"\nout: {elsewhere}\n```\n")
    missing = cli("run", card, check=False)
    assert missing.returncode != 0 and "--out" in missing.stderr and not elsewhere.exists()
    done = cli("run", card, "--out", tmp_path / "mine")
    assert "its out:" in done.stderr and "is not used" in done.stderr
    assert (tmp_path / "mine" / "model.safetensors").exists() and not elsewhere.exists()


def test_a_tensor_name_with_a_fence_in_it_cannot_add_a_recipe_to_the_card(tmp_path):
    """Tensor names come from checkpoints, which may be untrusted: they reach the card (a group's tensors) escaped."""
    import merge_rs

    name = "a.0.w" + INJECTED
    base = {name: np.ones((4, 3), np.float32), "b": np.zeros(3, np.float32)}
    pre = save(tmp_path / "pre", base)
    models = [save(tmp_path / f"m{i}", {k: v + i + 1 for k, v in base.items()}) for i in range(2)]
    merge_rs.merge("task_arithmetic", models, tmp_path / "out", pretrained=pre,
                   groups=[([name], {"scaling_factor": 0.5})])
    card = (tmp_path / "out" / "README.md").read_text()
    fences = [line for line in card.splitlines() if re.match(r" {0,3}(```|~~~)", line)]
    assert fences == ["```yaml merge-rs-recipe", "```"], fences
    plan = json.loads(cli("run", tmp_path / "out" / "README.md", "--out", tmp_path / "again", "--dry-run",
                          "--json").stdout)
    assert plan["method"] == "task_arithmetic"
