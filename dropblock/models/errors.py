"""Exceptions of dropblock.models; each message is one line, fit to show a user as is."""

from __future__ import annotations

import difflib
from collections.abc import Sequence


class WeightsError(Exception):
    """Weights could not be found, read, or fitted to the model (one-line message)."""


class UnknownNameError(ValueError):
    """A model or layer name that is not known.

    Attributes:
        name: the name as given.
        kind: what was looked up, e.g. ``"model"`` or ``"layer"``.
        choices: every valid name, the closest matches (difflib) first.
        close: the close matches alone (may be empty).
    """

    def __init__(self, kind: str, name: str, valid: Sequence[str], context: str = "") -> None:
        self.kind = kind
        self.name = name
        self.close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
        self.choices = self.close + [v for v in valid if v not in self.close]
        where = f" for {context}" if context else ""
        close = f"close matches: {', '.join(self.close)}; " if self.close else ""
        super().__init__(
            f"unknown {kind} {name!r}{where}; {close}all {kind}s: {', '.join(valid)}"
        )
