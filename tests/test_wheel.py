"""The wheel `make wheel` builds works on its own: installed into a fresh virtual environment with no Rust toolchain
on PATH, it merges and runs the demo. The wheel's dependencies come from this environment (a .pth file), so the test
needs no network; the merge_rs package is the wheel's alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "target" / "wheels"
NAME = re.compile(r"merge_rs-[^-]+-cp310-abi3-manylinux_2_(\d+)_x86_64\.whl$")


def built_wheel() -> Path:
    wheels = sorted((w for w in WHEELS.glob("merge_rs-*.whl") if NAME.search(w.name)), key=os.path.getmtime)
    assert wheels, f"no manylinux wheel in {WHEELS}: run `make wheel` (make test does)"
    return wheels[-1]


def test_the_wheel_is_abi3_manylinux_2_28_or_older():
    wheel = built_wheel()
    assert int(NAME.search(wheel.name).group(1)) <= 28
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert any(re.fullmatch(r"merge_rs/_core\.abi3\.so", n) for n in names), names
    assert "merge_rs/zoo/data/pretrained/model.safetensors" in names, "the zoo ships in the wheel"


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment holding the wheel, and an environment with no cargo or rustc on PATH."""
    where = tmp_path_factory.mktemp("wheel-venv")
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
                    built_wheel()], check=True)
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PATH": f"{where / 'bin'}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return where, env


def run(env: dict[str, str], *args: object, cwd: Path) -> str:
    result = subprocess.run(["merge-rs", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_no_rust_toolchain_is_in_reach(wheel_env):
    _, env = wheel_env
    for tool in ("cargo", "rustc", "maturin"):
        found = subprocess.run(["sh", "-c", f"command -v {tool}"], env=env, capture_output=True, text=True)
        assert found.returncode != 0, f"{tool} is on the test's PATH: {found.stdout}"


@pytest.mark.slow
def test_the_wheel_merges_and_runs_the_demo(wheel_env, tmp_path):
    where, env = wheel_env
    imported = subprocess.run(["python", "-c", "import merge_rs; print(merge_rs.__file__)"], env=env,
                              capture_output=True, text=True, check=True).stdout
    assert imported.startswith(str(where)), imported
    assert run(env, "--version", cwd=tmp_path).startswith("merge-rs, version ")
    run(env, "merge", "ties", "--pool", "zoo", "--out", tmp_path / "ties", "--quiet", cwd=tmp_path)
    assert (tmp_path / "ties" / "model.safetensors").is_file()
    table = run(env, "demo", "--no-learned", "--limit", "50", cwd=tmp_path)
    assert re.search(r"^ties\s+\d", table, re.MULTILINE) and "pretrained" in table, table
