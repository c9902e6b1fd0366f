"""Exceptions as one line of text, for messages that must fit on one line of a terminal."""

from __future__ import annotations


def one_line(exc: BaseException, *, with_type: bool = False) -> str:
    """``exc``'s message with its whitespace (newlines included) collapsed, or its type's name when
    it has none; ``with_type`` puts the type's name first (``"KeyError: 'x'"``)."""
    text = " ".join(str(exc).split())
    if with_type and text:
        return f"{type(exc).__name__}: {text}"
    return text or type(exc).__name__
