"""The benchmark's bookkeeping (benches/run.py, benches/report.py): warm-up runs are not counted, and a warm run's
report keeps the small-machine section that benches/small_machine.py wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"
sys.path.insert(0, str(BENCHES))

import report  # noqa: E402
import run  # noqa: E402
from small_machine import SECTION  # noqa: E402

@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="the benchmark times runs with /usr/bin/time")
def test_a_warm_up_run_is_made_and_not_counted(tmp_path):
    counter = tmp_path / "count"
    cmd = [f'echo x >> {counter}']
    result = run.repeat(run.Result("w", "sh", "append"), cmd, reps=2, shell=True, warmup=True)
    assert len(result.walls) == 2 and len(result.rss_mb) == 2
    assert counter.read_text().count("x") == 3
    cold = run.repeat(run.Result("w", "sh", "append"), cmd, reps=2, shell=True)
    assert len(cold.walls) == 2 and counter.read_text().count("x") == 5


def test_a_warm_report_keeps_the_small_machine_section(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "HERE", tmp_path)
    small = f"{SECTION}\n\n| memory limit | run |\n| 256 MB | cat |\n"
    (tmp_path / "RESULTS.md").write_text("# old warm tables\n\n" + small)
    results = [run.Result("w", "cat", "read all inputs", walls=[1.0], rss_mb=[2.0]),
               run.Result("w", "merge-rs", "task_arithmetic", walls=[2.0], rss_mb=[30.0])]
    report.write_report(results, "a machine", "python benches/run.py", 60.0)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "old warm tables" not in text and "| merge-rs | task_arithmetic | 2.00 |" in text
    assert text.endswith(small) and text.count(SECTION) == 1
    (tmp_path / "RESULTS.md").write_text("# no small-machine run yet\n")
    report.write_report(results, "a machine", "python benches/run.py", 60.0)
    assert SECTION not in (tmp_path / "RESULTS.md").read_text()
