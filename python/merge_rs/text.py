"""Text that came from inputs (tensor names, paths, override keys), made safe to show on one line."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with control characters (newline, ESC, ...) escaped as Python would write them, so one name or one
    message stays one line and cannot move the terminal's cursor."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
