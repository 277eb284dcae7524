"""Every file merge-rs writes is an output under one policy: never an input, never inside one or inside the zoo,
never a file merge-rs did not write (unless --overwrite), checked before any work, written through a temporary
sibling. The walk below finds every command and every path option by introspection, so a command added later is
covered without editing this file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import merge_rs
from merge_rs.cli import main
from merge_rs.clip.pool import zoo_directory
from merge_rs.output import written_by_merge_rs

# A valid invocation of each command; the option under test is replaced in it (or appended).
BASES = {
    "demo": ["demo", "--no-learned", "--limit", "2", "--device", "cpu", "--quiet"],
    "eval": ["eval", "pretrained", "--pool", "zoo", "--limit", "2", "--device", "cpu", "--quiet"],
    "info": ["info", "{pre}"],
    "cos-sim": ["cos-sim", "--pretrained", "{pre}", "--model", "{a}", "--model", "{b}", "--quiet"],
    "adamerging": ["adamerging", "--pool", "zoo", "--out", "{tmp}/out", "--steps", "0", "--quiet"],
    "fisher": ["fisher", "--pool", "zoo", "--out", "{tmp}/out", "--limit", "2", "--quiet"],
    "regmean": ["regmean", "--pool", "zoo", "--out", "{tmp}/out", "--limit", "2", "--quiet"],
    "merge": ["merge", "task_arithmetic", "--pretrained", "{pre}", "--model", "{a}", "--model", "{b}", "--out",
              "{tmp}/out", "--quiet"],
    "run": ["run", "{recipe}", "--out", "{tmp}/out", "--quiet"],
    "extract-lora": ["extract-lora", "{a}", "--pretrained", "{pre}", "--rank", "1", "--out", "{tmp}/out", "--quiet"],
    "sweep": ["sweep", "task_arithmetic", "--pool", "zoo", "--param", "scaling_factor=0.3", "--limit", "2", "--quiet"],
}
SUFFIX = {"--plot": ".png", "--csv": ".csv", "--report": ".json"}


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def _path_params():
    for name, command in _commands(main):
        for param in command.params:
            if isinstance(param.type, click.Path):
                yield name, param


CASES = [(name, p.opts[0] if isinstance(p, click.Option) else p.name, bool(p.type.writable), target)
         for name, p in _path_params() for target in ("input", "zoo", "user", "under-a-file")]


def test_every_command_with_a_path_option_has_a_base_invocation():
    assert {name for name, _ in _path_params()} <= set(BASES)


def _snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            if f.is_file() and "out" not in f.relative_to(root).parts[:1]:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.stat().st_size < 1 << 20 else \
                    f"{f.stat().st_size}:{f.stat().st_mtime_ns}:{f.stat().st_ino}"
    return out


def _invocation(command: str, option: str, value: str, places: dict[str, str]) -> list[str]:
    args = [a.format(**places) for a in BASES.get(command, command.split())]
    if not option.startswith("-"):  # an argument: the base's first path-like argument
        index = next(i for i, a in enumerate(args) if a.startswith(places["tmp"]) or a in places.values())
        return [*args[:index], value, *args[index + 1:]]
    if option in args:
        i = args.index(option)
        return [*args[:i + 1], value, *args[i + 2:]]
    return [*args, option, value]


@pytest.fixture
def world(tmp_path):
    """Fresh inputs for every case, so that a case that damaged one cannot hide the next case's damage."""
    from conftest import save
    import numpy as np

    tmp = tmp_path / "policy"
    base = {"w": np.ones((4, 3), np.float32), "b": np.zeros(3, np.float32)}
    pre, a, b = (save(tmp / n, {k: v + i for k, v in base.items()}) for i, n in enumerate(("pre", "a", "b")))
    recipe = tmp / "recipe.yml"
    recipe.write_text(f"method: task_arithmetic\npretrained: {pre}\nmodels:\n  - {a}\n  - {b}\n")
    return {"tmp": str(tmp), "pre": str(pre), "a": str(a), "b": str(b), "recipe": str(recipe)}


@pytest.mark.parametrize("command,option,writes,target", CASES,
                         ids=[f"{c}-{o}-{t}" for c, o, _, t in CASES])
def test_no_path_option_touches_an_input_the_zoo_or_a_user_file(world, command, option, writes, target):
    tmp = Path(world["tmp"])
    zoo = zoo_directory()
    user = tmp / "user" / f"precious{SUFFIX.get(option, '.txt')}"
    user.parent.mkdir(exist_ok=True)
    user.write_bytes(b"precious\n")
    pool_command = "{pre}" not in " ".join(BASES.get(command, []))
    value = {"input": str(zoo / "models" / "mnist" / "config.json") if pool_command else
             str(Path(world["a"]) / "model.safetensors"), "zoo": str(zoo / "zoo.json"), "user": str(user),
             "under-a-file": str(user / "sub" / f"out{SUFFIX.get(option, '')}")}[target]
    if not Path(value).exists():
        value = str(next(p for p in (zoo / "models").rglob("*.json")))
    before = _snapshot(tmp, zoo)
    result = CliRunner().invoke(main, _invocation(command, option, value, world))
    assert _snapshot(tmp, zoo) == before, "a file that was there changed"
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"traceback: {result.exception!r}"
    if writes:
        assert result.exit_code != 0, f"merge-rs wrote {option} over {target} ({value})"
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr


def test_re_running_replaces_merge_rs_files_and_overwrite_replaces_a_user_file(world, tmp_path):
    args = ["cos-sim", "--pretrained", world["pre"], "--model", world["a"], "--model", world["b"], "--quiet"]
    csv, plot = tmp_path / "cos.csv", tmp_path / "cos.png"
    runner = CliRunner()
    for _ in range(2):  # the second run replaces what the first wrote
        assert runner.invoke(main, [*args, "--csv", str(csv), "--plot", str(plot)]).exit_code == 0
        assert written_by_merge_rs(csv) and written_by_merge_rs(plot)
    assert csv.read_text().startswith(f"merge-rs {merge_rs.__version__},")
    mine = tmp_path / "mine.csv"
    mine.write_text("a,b\n")
    refused = runner.invoke(main, [*args, "--csv", str(mine)])
    assert refused.exit_code == 1 and "merge-rs did not write it" in refused.stderr and mine.read_text() == "a,b\n"
    assert runner.invoke(main, [*args, "--csv", str(mine), "--overwrite"]).exit_code == 0
    assert written_by_merge_rs(mine)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary sibling was left behind"


def test_reports_are_marked_and_only_merge_rs_reports_are_replaced(tmp_path):
    from merge_rs.exceptions import OutputExistsError, OutputIsInputError
    from merge_rs.output import write_report

    report = tmp_path / "r.json"
    write_report(report, {"average": {"accuracy": 0.5}})
    assert list(json.loads(report.read_text())) == ["generator", "average"]
    write_report(report, {"average": {"accuracy": 0.6}})  # its own file: replaced
    assert json.loads(report.read_text())["average"]["accuracy"] == 0.6
    (tmp_path / "theirs.json").write_text('{"generator": "someone else"}')
    with pytest.raises(OutputExistsError):
        write_report(tmp_path / "theirs.json", {})
    with pytest.raises(OutputIsInputError):
        write_report(zoo_directory() / "report.json", {})


def test_a_file_output_where_none_can_be_created_is_refused_before_any_work(tmp_path, monkeypatch):
    import merge_rs.output as output
    from merge_rs.exceptions import InvalidArgumentError

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match="[Nn]ot a directory"):
        output.check_file_output(tmp_path / "notes.txt" / "deeper" / "plot.png")
    output.check_file_output(tmp_path / "new" / "deeper" / "plot.png")  # directories still to be made are fine
    # A directory this user may not write to (simulated: the tests run as root, whom permissions do not stop).
    monkeypatch.setattr(output.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(InvalidArgumentError, match=f"{tmp_path} is not writable"):
        output.check_file_output(tmp_path / "new" / "deeper" / "plot.png")


@pytest.mark.parametrize("args", [
    ["merge", "task_arithmetic", "--pool", "zoo", "--out", "{zoo}/merged"],
    ["extract-lora", "{a}", "--pretrained", "{pre}", "--rank", "1", "--out", "{zoo}/adapter"],
    ["run", "{multi}", "--out", "{tmp}/final", "--intermediate-dir", "{zoo}"],
], ids=["merge", "extract-lora", "run-multi"])
def test_no_model_directory_is_written_inside_the_shipped_zoo(world, args):
    zoo = zoo_directory()
    multi = Path(world["tmp"]) / "multi.yml"
    multi.write_text(f"name: step\nmerge_method: linear\nmodels:\n  - {{model: {world['a']}, parameters: {{weight: 1}}}}\n"
                     f"  - {{model: {world['b']}, parameters: {{weight: 1}}}}\n---\nmerge_method: linear\nmodels:\n"
                     "  - {model: step, parameters: {weight: 1}}\n"
                     f"  - {{model: {world['a']}, parameters: {{weight: 1}}}}\n")
    before = _snapshot(zoo)
    result = CliRunner().invoke(main, [a.format(zoo=zoo, multi=multi, **world) for a in args])
    assert result.exit_code == 1 and "must not be one of the inputs nor inside one" in result.stderr, result.stderr
    assert _snapshot(zoo) == before and sorted(p.name for p in zoo.iterdir()) == sorted(
        ["adapters", "datasets", "models", "pretrained", "pretraining-hashes.txt", "zoo.json"])
