"""Every learned method, by name (each declares itself in its own module as ``METHOD``)."""

from __future__ import annotations

from . import adamerging, fisher, regmean
from .method import LearnedMethod

LEARNED: dict[str, LearnedMethod] = {m.name: m for m in (adamerging.METHOD, fisher.METHOD, regmean.METHOD)}
