"""Hyperparameter sweeps, without torch: the grid (``name=start:stop:step`` or ``name=a,b,c`` per parameter,
checked against the method's declarations), the sweep's report file (which a rerun resumes from), and the
choice of the best point."""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import InvalidArgumentError
from .methods import MethodInfo

SWEEPABLE = {"f32", "f64", "u64", "bool", "choice"}
MAX_POINTS = 10_000  # merges a sweep may make by default (--max-points)


@dataclass(frozen=True)
class Axis:
    """One swept parameter and its values, in order."""

    name: str
    values: tuple[Any, ...]


def parse_axis(text: str, method: MethodInfo, max_points: int = MAX_POINTS) -> Axis:
    """``name=start:stop:step`` (both ends included) or ``name=a,b,c``, each value checked for ``method``."""
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not spec.strip():
        raise InvalidArgumentError(f"--param '{text}': expected NAME=START:STOP:STEP or NAME=A,B,C")
    param = method.parameter(name)
    if param is None:
        known = ", ".join(p.name for p in method.parameters if p.kind in SWEEPABLE) or "none"
        raise InvalidArgumentError(f"--param {name}: {method.name} has no such parameter (it sweeps: {known})")
    if param.kind not in SWEEPABLE:
        raise InvalidArgumentError(f"--param {name}: a {param.kind.replace('_', ' ')} parameter cannot be swept")
    values = _range(name, spec, max_points) if ":" in spec else tuple(_scalar(v) for v in spec.split(",") if v.strip())
    if param.kind == "u64":  # 0:3:1 is 0, 1, 2, 3 for an integer parameter, not 0.0, 1.0, ...
        values = tuple(int(v) if isinstance(v, float) and v.is_integer() else v for v in values)
    if not values:
        raise InvalidArgumentError(f"--param {name}: no values in '{spec}'")
    for value in values:
        problem = param.problem(value)
        if problem:
            raise InvalidArgumentError(f"--param {name}: {value!r} is out of range (expected {problem})")
    return Axis(name, values)


def _range(name: str, spec: str, max_points: int) -> tuple[float, ...]:
    try:
        start, stop, step = (float(p) for p in spec.split(":"))
    except ValueError:
        raise InvalidArgumentError(f"--param {name}: a range is START:STOP:STEP with numbers, got '{spec}'") from None
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise InvalidArgumentError(f"--param {name}: START, STOP and STEP must be finite numbers, got '{spec}'")
    if step <= 0 or stop < start:
        raise InvalidArgumentError(f"--param {name}: the range {spec} is empty (STEP > 0 and STOP ≥ START)")
    count = int((stop - start) / step + 1e-9) + 1  # counted before anything is built
    if count > max_points:
        raise InvalidArgumentError(f"--param {name}: the range {spec} has {count:,} values; a sweep takes at most "
                                   f"{max_points:,} points (raise it with --max-points)")
    return tuple(round(start + i * step, 10) for i in range(count))


def check_grid_size(axes: list[Axis], max_points: int = MAX_POINTS) -> int:
    """The number of grid points, refused over ``max_points`` before the grid is built."""
    count = math.prod(len(a.values) for a in axes)
    if count > max_points:
        raise InvalidArgumentError(f"the grid has {count:,} points (" + " × ".join(str(len(a.values)) for a in axes)
                                   + f"); a sweep takes at most {max_points:,} (raise it with --max-points)")
    return count


def _scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text.strip())
    except yaml.YAMLError:
        return text.strip()


def grid(axes: list[Axis]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the first axis varying slowest."""
    return [dict(zip((a.name for a in axes), combo)) for combo in itertools.product(*(a.values for a in axes))]


def point_key(point: dict[str, Any]) -> str:
    """A grid point as the key that finds it in a report."""
    return json.dumps(point, sort_keys=True)


def best_point(reports: list[dict[str, Any]], select: str) -> int:
    """The index of the highest accuracy on ``select`` (``average`` or a task); the first on a tie."""
    if not reports:
        raise InvalidArgumentError("no sweep point was evaluated")
    if select not in reports[0]:
        tasks = [k for k in reports[0] if k != "model_info"]
        raise InvalidArgumentError(f"--select {select}: not a task of this sweep ({', '.join(tasks)})")
    scores = [r[select]["accuracy"] for r in reports]
    return scores.index(max(scores))


def _resume_problem(saved: Any) -> str | None:
    """What makes ``saved`` unusable as a sweep report (None if nothing)."""
    if not isinstance(saved, dict):
        return "it is not a JSON object"
    points = saved.get("points")
    if not isinstance(points, list):
        return "its 'points' is not a list"
    for i, point in enumerate(points):
        if not (isinstance(point, dict) and isinstance(point.get("parameters"), dict)
                and isinstance(point.get("report"), dict)):
            return f"point {i} lacks its parameters or report"
    if not isinstance(saved.get("references", {}), dict):
        return "its 'references' is not an object"
    return None


def _lock(report: Path) -> int:
    """Hold an exclusive lock on the report for this process's life (a hidden ``.NAME.merge-rs-lock`` beside
    it, removed when the process exits), so that two sweeps never write one report and lose each other's points."""
    import atexit
    import fcntl

    path = report.with_name(f".{report.name}.merge-rs-lock")
    report.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InvalidArgumentError(f"{report}: another sweep is writing this report; wait for it or give "
                                       "another --report") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break  # the file still bears the name: no sweep removed it between our open and our lock
        except FileNotFoundError:
            pass
        os.close(fd)
    atexit.register(_unlock, path, fd)
    return fd


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file while holding it (a sweep that opened it meanwhile sees it gone and opens anew)."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


class SweepLog:
    """The sweep's report file: what it sweeps, each evaluated point, the reference models and the best
    point. A rerun with the same method, pool, split and grid resumes where it stopped."""

    def __init__(self, path: Path | None, identity: dict[str, Any], inputs: list[Any] | None = None,
                 overwrite: bool = False) -> None:
        from .output import written_by_merge_rs

        self.path, self.inputs, self.overwrite = path, list(inputs or []), overwrite
        self.data: dict[str, Any] = {**identity, "points": [], "references": {}, "best": None}
        self._lock = _lock(path) if path is not None else None
        if path is not None and path.exists() and written_by_merge_rs(path):  # another file is replaced whole
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise InvalidArgumentError(f"{path}: cannot resume from it ({e})") from None
            problem = _resume_problem(saved)
            if problem and overwrite:
                return  # started again from nothing; the file is replaced at the first save
            if problem:
                raise InvalidArgumentError(f"{path}: cannot resume from it ({problem}); give another --report or "
                                           "pass --overwrite to start it again")
            mismatch = [k for k in identity if saved.get(k) != identity[k]]
            if mismatch:
                raise InvalidArgumentError(f"{path} is the report of another sweep (its {mismatch[0]} differs); "
                                           "give another --report or remove it")
            self.data = saved

    def add(self, parameters: dict[str, Any], report: dict[str, Any]) -> None:
        self.data["points"].append({"parameters": parameters, "report": report})
        self.save()

    def save(self) -> None:
        if self.path is not None:
            from .output import write_report

            write_report(self.path, self.data, self.inputs, self.overwrite)


SCRATCH_PREFIX = "merge-rs-sweep-"


def scratch_prefix() -> str:
    """The prefix of this process's scratch directories (each point's merge when --keep is not given)."""
    return f"{SCRATCH_PREFIX}{os.getpid()}-"


def remove_stale_scratch(directory: Path | None = None) -> list[Path]:
    """Remove the scratch directories of sweeps whose process is gone (a SIGKILL leaves a whole merged model
    behind); those of running processes, and anything not named by a sweep, are left alone."""
    import shutil
    import tempfile

    removed = []
    root = Path(directory or tempfile.gettempdir())
    for path in root.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or not path.is_dir() or path.is_symlink() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, someone else's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
