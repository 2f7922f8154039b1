"""Redis answers bytes; what we read back as text is decoded here, the one way."""

from __future__ import annotations


def text(value: object) -> str:
    """`value` as text: undecodable bytes are replaced, None is empty."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)
