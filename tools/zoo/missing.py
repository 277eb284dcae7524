"""The one error a source raises when a package it reads is not installed."""

from __future__ import annotations

from pathlib import Path


class SourceMissing(RuntimeError):
    """A source package is not installed; the message says which one to install."""


def require(path: Path, package: str) -> Path:
    if not path.exists():
        raise SourceMissing(f"{path} not found: install the Debian package '{package}' (apt-get install {package})")
    return path
