"""Exceptions as one line of text, for messages that must fit on one line of a terminal."""

from __future__ import annotations


def one_line(exc: BaseException, *, with_type: bool = False, limit: int | None = None) -> str:
    """``exc``'s message with its whitespace (newlines included) collapsed, or its type's name when
    it has none; ``with_type`` puts the type's name first (``"KeyError: 'x'"``); ``limit`` cuts the
    text to that many characters, ending in ``...`` (torch's messages can list hundreds of keys)."""
    text = " ".join(str(exc).split())
    if with_type and text:
        text = f"{type(exc).__name__}: {text}"
    text = text or type(exc).__name__
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


class DropblockError(Exception):
    """Base of dropblock's own errors; the message is one line, fit to show a user as is."""


class UsageError(DropblockError, ValueError):
    """What was asked for is wrong: a bad argument, an unknown name, a file that is not one.
    The command line exits 2. A ``ValueError``, as torch's own argument errors are."""


class Failure(DropblockError, RuntimeError):
    """What was asked for could not be done: a model or weights that cannot be had or run, a
    file that cannot be written. The command line exits 1."""
