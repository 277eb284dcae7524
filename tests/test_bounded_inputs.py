"""Small inputs never cost unbounded time or memory: recipes (and overrides) with alias bombs, cyclic anchors or
deep nesting, recipes that are not regular files, and sweep grids too large to build, each a one-line error."""

from __future__ import annotations

import pytest

from conftest import cli
from merge_rs.exceptions import InvalidArgumentError
from merge_rs.methods import get_method
from merge_rs.recipes.bounded_yaml import MAX_BYTES, safe_load
from merge_rs.sweep import check_grid_size, parse_axis

LAUGHS = "[" + ",".join(["lol"] * 9) + "]"


def _bomb(levels: int = 9) -> str:
    """A billion-laughs document: each level repeats the previous one nine times (9**levels strings)."""
    lines = [f"l0: &l0 {LAUGHS}"]
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _one_line_error(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_yaml_bounds_refuse_bombs_cycles_and_depth_but_load_ordinary_aliases():
    assert safe_load("a: &x [1, 2]\nb: *x\n", "t") == {"a": [1, 2], "b": [1, 2]}
    for text, message in ((_bomb(), "expands to more than"), ("&a [*a]", "nests more than"),
                          ("[" * 2000 + "]" * 2000, "nests more than")):
        with pytest.raises(InvalidArgumentError, match=message):
            safe_load(text, "t")


@pytest.mark.parametrize("case", ["bomb", "cycle", "deep", "override bomb", "dev zero", "too large", "fifo"])
def test_recipes_that_would_not_end_are_one_line_errors(tmp_path, case):
    import os

    recipe = tmp_path / "recipe.yml"
    recipe.write_text("method: task_arithmetic\n")
    args = [recipe, "--out", tmp_path / "out"]
    if case == "bomb":
        recipe.write_text(_bomb() + "method: *l8\n")
    elif case == "cycle":
        recipe.write_text("method: &a [*a]\n")
    elif case == "deep":
        recipe.write_text("method: " + "[" * 2000 + "]" * 2000 + "\n")
    elif case == "override bomb":
        args.append("parameters.x={" + _bomb().replace("\n", ", ").rstrip(", ") + "}")
    elif case == "dev zero":
        args[0] = "/dev/zero"
    elif case == "too large":
        recipe.write_text("method: task_arithmetic\n" + "#" * MAX_BYTES + "\n")
    else:
        args[0] = tmp_path / "fifo"
        os.mkfifo(args[0])  # opening it for reading would block without a writer: it must be refused first
    line = _one_line_error(cli("run", *args, check=False))
    assert any(word in line for word in ("expands", "nests", "regular file", "at most")), line
    assert not (tmp_path / "out").exists()


def test_a_model_card_saved_as_markdown_is_read_as_a_card(tmp_path):
    card = tmp_path / "card.markdown"
    card.write_text("# A card\n\nSome prose: not YAML at all.\n\n```yaml\nmethod: [unclosed\n```\n")
    line = _one_line_error(cli("run", card, "--out", tmp_path / "out", check=False))
    assert f"{card}:7: not valid YAML" in line  # in the fenced block (whole-file YAML fails on line 5)


def test_sweep_grids_are_counted_before_they_are_built():
    ta, dare = get_method("task_arithmetic"), get_method("dare")
    with pytest.raises(InvalidArgumentError, match="1,000,000,001 values"):
        parse_axis("scaling_factor=0:1000000000:1", ta)
    for bad in ("0:inf:1", "nan:1:0.1", "0:1:nan"):
        with pytest.raises(InvalidArgumentError, match="finite"):
            parse_axis(f"scaling_factor={bad}", ta)
    axes = [parse_axis("drop_rate=0:0.99:0.01", dare), parse_axis("seed=0:200:1", dare)]
    assert axes[1].values[:3] == (0, 1, 2)  # an integer parameter's range is integers
    with pytest.raises(InvalidArgumentError, match="20,100 points"):
        check_grid_size(axes)
    assert check_grid_size(axes, max_points=20_100) == 20_100
