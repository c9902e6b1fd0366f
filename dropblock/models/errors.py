"""Exceptions of dropblock.models; each message is one line, fit to show a user as is.

The two families of :mod:`dropblock.errors`, which a command line maps to exit codes:

- :class:`~dropblock.errors.UsageError` (a ``ValueError``): :class:`UnknownNameError` (and
  :class:`UnknownModelError`), :class:`ModelSpecError`, :class:`LayerError`. What the user typed
  is wrong (exit 2).
- :class:`~dropblock.errors.Failure`: :class:`WeightsError`, :class:`ModelLoadError`. What was
  asked for could not be done: weights missing or unfit, the user's code raised, an extra is not
  installed (exit 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from dropblock.errors import Failure, UsageError, one_line


def why(exc: BaseException) -> str:
    """``exc`` as the end of a one-line message: its type and first line, at most 160 characters."""
    return one_line(exc, with_type=True, limit=160)


class WeightsError(Failure):
    """Weights could not be found, read, or fitted to the model (one-line message)."""


class ModelLoadError(Failure):
    """A model could not be built or run: its code raised, it returned something other than an
    ``nn.Module`` or than (1, classes) logits, or torchvision/timm is not installed."""


class ModelSpecError(UsageError):
    """A model spec (``--model``) that names no model: bad form, missing file or module."""


class LayerError(UsageError):
    """A layer that exists but cannot be edited: its output is not one (N, C, H, W) map, it
    does not run in a forward pass, or it runs more than once."""


class UnknownNameError(UsageError):
    """A model or layer name that is not known.

    Attributes:
        name: the name as given.
        kind: what was looked up, e.g. ``"model"`` or ``"layer"``.
        choices: every valid name, the closest matches (difflib) first.
        close: the close matches alone (may be empty).
    """

    def __init__(self, kind: str, name: str, valid: Sequence[str], context: str = "",
                 hint: str | None = None) -> None:
        """``hint`` replaces the closing list of every valid name (for long lists)."""
        self.kind = kind
        self.name = name
        self.close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.6)
        self.choices = self.close + [v for v in valid if v not in self.close]
        where = f" for {context}" if context else ""
        close = f"close matches: {', '.join(self.close)}; " if self.close else ""
        tail = hint if hint is not None else f"all {kind}s: {', '.join(valid)}"
        super().__init__(f"unknown {kind} {name!r}{where}; {close}{tail}")


class UnknownModelError(UnknownNameError, ModelSpecError):
    """A model name that a source (the built-ins, torchvision, timm) does not have."""

