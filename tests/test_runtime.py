"""Runtime behaviour: the GIL is released during merges, Ctrl-C cancels cleanly, progress is reported, and
the CLI's merge path never imports torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import cli

import merge_rs
from merge_rs import _core
from merge_rs.synthetic import make_model_set


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_model_set(tmp_path_factory.mktemp("small"), "small", 4)


@pytest.fixture(scope="module")
def large_set(tmp_path_factory):
    """Two ViT-B/32-sized models: a TIES merge of them lasts long enough to be interrupted."""
    return make_model_set(tmp_path_factory.mktemp("large"), "vit-b-32", 2)


def test_gil_is_released_during_a_merge(large_set, tmp_path):
    pretrained, models = large_set
    done = threading.Event()
    ticks = 0

    def work():
        merge_rs.merge("ties", models, tmp_path / "out", pretrained=pretrained, threads=1)
        done.set()

    worker = threading.Thread(target=work)
    started = time.perf_counter()
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    elapsed = time.perf_counter() - started
    # A merge holding the GIL would leave this thread frozen for its whole duration.
    assert elapsed > 0.05
    assert ticks > elapsed * 100, (ticks, elapsed)


def test_progress_is_reported_per_phase(small_set, tmp_path):
    pretrained, models = small_set
    calls = []
    merge_rs.merge("ties", models, tmp_path / "out", pretrained=pretrained, threads=1,
                   progress=lambda phase, done, total: calls.append((phase, done, total)))
    phase, done, total = calls[-1]
    assert phase == "merge" and done == total > 0
    assert all(0 <= d <= t for _, d, t in calls)


def test_an_exception_in_the_progress_callback_cancels_and_cleans_up(large_set, tmp_path):
    pretrained, models = large_set

    def interrupt(phase, done, total):
        raise KeyboardInterrupt

    request = {"method": "ties", "parameters": {"scaling_factor": 0.3, "threshold": 20, "merge_func": "sum"},
               "pretrained": str(pretrained), "models": [str(m) for m in models], "out": str(tmp_path / "out"),
               "max_shard_size": 10**9, "threads": 1}
    with pytest.raises(KeyboardInterrupt):
        _core.merge(json.dumps(request), interrupt)
    assert list(tmp_path.iterdir()) == []


def test_an_interruption_after_the_work_completed_keeps_the_complete_output(small_set, tmp_path):
    pretrained, models = small_set

    def late(phase, done, total):
        if phase == "merge" and done == total:
            raise KeyboardInterrupt

    report = merge_rs.merge("task_arithmetic", models, tmp_path / "out", pretrained=pretrained, progress=late)
    assert (tmp_path / "out" / "model.safetensors").is_file() and report.output == tmp_path / "out"


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signals_stop_the_cli_and_leave_nothing(large_set, tmp_path, signum, code):
    pretrained, models = large_set
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "merge_rs.cli", "merge", "ties", "--pretrained", str(pretrained),
         *[a for m in models for a in ("--model", str(m))], "--out", str(out), "--threads", "1"],
        stderr=subprocess.PIPE, text=True,
        # A shell's background job starts with SIGINT ignored, and Python then never turns it into
        # KeyboardInterrupt: give the CLI the default disposition a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while not [p for p in tmp_path.iterdir() if p.name.startswith(".out")] and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in stderr
    assert list(tmp_path.iterdir()) == []


def test_merge_path_does_not_import_torch(golden, tmp_path):
    code = f"""
import sys
from merge_rs.cli import main
try:
    main(["merge", "ties", "--pretrained", {str(golden["pretrained"])!r}, "--model", {str(golden["models"][0])!r},
          "--out", {str(tmp_path / "out")!r}, "--quiet"])
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = [m for m in ("torch", "transformers", "numpy") if m in sys.modules]
assert not heavy, heavy
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_cli_info_and_json(golden):
    text = cli("info", golden["models"][2]).stdout
    assert "CLIPVisionModel" in text and "shards      2" in text
    data = json.loads(cli("info", golden["models"][2], "--json").stdout)
    assert data["tensor_count"] == 39 and len(data["shards"]) == 2
    listing = cli("info", golden["pretrained"], "--tensors").stdout
    assert "text_model." in listing and "CLIPModel (text + vision towers)" in listing


def test_cli_human_output_and_quiet(golden, tmp_path):
    result = cli("merge", "ties", "--pretrained", golden["pretrained"], "--model", golden["models"][0],
                 "--model", golden["models"][1], "--out", tmp_path / "o", "--quiet")
    assert result.stderr == ""
    assert "ties(scaling_factor=0.3, threshold=20.0, merge_func=sum, trim=global)" in result.stdout


def test_version_matches_the_crate():
    out = cli("--version").stdout
    assert merge_rs.__version__ in out
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
