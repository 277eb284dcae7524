"""Running a command as on a small machine: in a memory cgroup whose limit also counts the page cache the command
fills (cgroup v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, whichever the machine has), with its input files
evicted from the page cache first, so that every byte is read from the disk. Needs root (or a delegated cgroup)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@dataclass
class LimitedRun:
    """Wall time, the process's peak RSS, whether the kernel's OOM killer ended it, and whether it was stopped
    for running past the time limit (thrashing: a working set above the limit that is re-read from disk)."""

    wall: float
    rss_mb: float
    killed: bool
    returncode: int
    timed_out: bool = False


def _own_cgroup() -> tuple[Path, str]:
    """(directory of this process's memory cgroup, the name of its limit file)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return ROOT / "memory" / path.lstrip("/"), "memory.limit_in_bytes"
    unified = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
    base = ROOT / "unified" if (ROOT / "unified" / "cgroup.controllers").exists() else ROOT
    return base / unified.lstrip("/"), "memory.max"


def evict(files: list[Path]) -> None:
    """Drop ``files`` from the page cache (they are clean: nothing is lost)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_limited(cmd: list[str], limit_bytes: int, inputs: list[Path], shell: bool = False,
                timeout: float | None = None) -> LimitedRun:
    """Run ``cmd`` in a fresh memory cgroup limited to ``limit_bytes``, after evicting ``inputs``; stop it after
    ``timeout`` seconds."""
    parent, limit_file = _own_cgroup()
    group = parent / f"merge-rs-bench-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        (group / limit_file).write_text(str(limit_bytes))
        subprocess.run(["sync"], check=True)
        evict(inputs)
        procs = group / "cgroup.procs"
        with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
            full = ["/usr/bin/time", "-o", t.name, "-f", "%e %M"] + (["sh", "-c", *cmd] if shell else cmd)
            started = time.perf_counter()
            proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: procs.write_text(str(os.getpid())))
            try:
                _, stderr = proc.communicate(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                for pid in (group / "cgroup.procs").read_text().split():
                    os.kill(int(pid), 9)
                _, stderr = proc.communicate()
                timed_out = True
            wall = time.perf_counter() - started
            fields = t.read().split()
        if timed_out:
            return LimitedRun(wall, float("nan"), False, proc.returncode, timed_out=True)
        killed = _oom_killed(group) or proc.returncode in (137, -9) or "Killed" in stderr
        rss = float(fields[-1]) / 1024 if len(fields) >= 2 and fields[-1].isdigit() else float("nan")
        if proc.returncode != 0 and not killed:
            raise RuntimeError(f"{' '.join(map(str, cmd))[:300]} failed:\n{stderr[-2000:]}")
        return LimitedRun(wall, rss, killed, proc.returncode)
    finally:
        _remove(group)


def _oom_killed(group: Path) -> bool:
    for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
        path = group / name
        if path.exists():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == key and int(parts[1]) > 0:
                    return True
    return False


def _remove(group: Path) -> None:
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)
