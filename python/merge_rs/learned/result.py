"""What a learned merge reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LearnedMerge:
    """The output, what was learned or computed, the time it took and the peak memory."""

    method: str
    output: Path
    tasks: list[str]
    seconds: float
    peak_rss_mb: float
    peak_cuda_mb: float | None = None
    losses: list[float] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output"] = str(self.output)
        return data
