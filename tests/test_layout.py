"""The package's structure: the torch line, and what is generated from the engine's method table."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import merge_rs
from conftest import cli
from merge_rs.methods import METHODS, markdown_table

ROOT = Path(__file__).resolve().parents[1]
TORCH_BOUND = ("merge_rs.clip", "merge_rs.learned", "merge_rs.zoo")


def test_torch_free_modules_import_no_heavy_library():
    modules = [m.name for m in pkgutil.walk_packages(merge_rs.__path__, "merge_rs.")
               if not m.name.startswith(TORCH_BOUND) and m.name != "merge_rs.cli.__main__"]
    assert {"merge_rs.api", "merge_rs.methods", "merge_rs.reports", "merge_rs.cli.merge"} <= set(modules)
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_bound_code_lives_in_subpackages():
    top = {m.name for m in pkgutil.iter_modules(merge_rs.__path__)}
    assert {"clip", "learned"} <= top
    assert not top & {"pool", "evaluate", "heads", "data", "models", "tasks", "demo"}
    assert not (Path(merge_rs.__file__).parent / "zoo" / "build.py").exists(), "the zoo builder is not shipped"


def test_readme_method_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "regenerate it with: merge-rs methods --markdown"


def test_help_lists_every_method_on_its_own_line():
    text = cli("merge", "--help").stdout
    for name, method in METHODS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(method.summary[:20])}", text, re.MULTILINE), name
        for p in method.parameters:
            assert "--" + p.name.replace("_", "-") in text


def test_no_two_options_of_a_command_share_a_keyword():
    # click lets two options share one keyword and keeps one value: AdaMerging's --train-batch-size was lost to the
    # evaluation's --batch-size that way.
    import click

    from merge_rs.cli import main

    def commands(group: click.Group, path: str):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, f"{path} {name}")
            else:
                yield f"{path} {name}", command

    found = list(commands(main, "merge-rs"))
    assert len(found) >= 10
    for path, command in found:
        keywords = [p.name for p in command.params]
        assert len(keywords) == len(set(keywords)), (path, sorted(k for k in keywords if keywords.count(k) > 1))


def test_methods_command_shows_papers_and_defaults():
    text = cli("methods").stdout
    for method in METHODS.values():
        assert method.paper in text
    assert "--threshold  percentage of each task vector's entries kept (largest magnitudes) (default: 20.0)" in text
    assert cli("methods", "--markdown").stdout == markdown_table()


def test_reports_tolerate_fields_they_do_not_know(golden, tmp_path):
    report = merge_rs.merge("task_arithmetic", golden["models"][:2], tmp_path / "o", pretrained=golden["pretrained"])
    data = report.to_dict()
    again = merge_rs.MergeReport.from_json({**data, "new_engine_field": 3})
    assert again.extra == {"new_engine_field": 3}
    assert again.to_dict()["new_engine_field"] == 3 and again.parameters_merged == report.parameters_merged


def test_exceptions_are_the_engines_own_and_pickle():
    import pickle

    from merge_rs import _core, exceptions

    assert exceptions.InvalidArgumentError is _core.InvalidArgumentError
    assert issubclass(exceptions.InvalidArgumentError, (merge_rs.MergeRsError, ValueError))
    assert issubclass(exceptions.OutputExistsError, FileExistsError)
    error = pickle.loads(pickle.dumps(exceptions.NonFiniteError("x")))
    assert type(error) is exceptions.NonFiniteError and str(error) == "x"
