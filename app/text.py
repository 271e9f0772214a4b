"""Text sent by clients, checked against what a database text column can hold."""

from __future__ import annotations


def storable(text: str) -> bool:
    """False for a string no database text can hold: one with a NUL character (PostgreSQL
    refuses it) or a lone surrogate (JSON "\\ud800" decodes to one; UTF-8 has none)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
