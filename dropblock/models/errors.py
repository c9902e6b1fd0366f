"""Exceptions of dropblock.models, each with a one-line message fit to show a user as is; each is a
usage error (:class:`~dropblock.errors.UsageError`, exit 2) or a failure (:class:`~dropblock.errors.Failure`,
exit 1) by its base class."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from dropblock.errors import Failure, UsageError, one_line


def why(exc: BaseException) -> str:
    """``exc`` as the end of a one-line message: its type and first line, at most 160 characters."""
    return one_line(exc, with_type=True, limit=160)


class WeightsError(Failure):
    """Weights could not be found, read, or fitted to the model."""


class ModelLoadError(Failure):
    """A model could not be built or run: its code raised, it returned no ``nn.Module`` or no
    (1, classes) logits, or torchvision/timm is not installed."""


class ModelSpecError(UsageError):
    """A model spec (``--model``) that names no model: bad form, missing file or module."""


class LayerError(UsageError):
    """A layer that cannot be edited: its output is not one (N, C, H, W) map, or it does not run exactly once."""


class UnknownNameError(UsageError):
    """A ``kind`` of name (``"model"``, ``"layer"``) that is not known. ``choices``: every valid
    name, the ``close`` matches (difflib) first; ``hint`` replaces the closing list of them all."""

    def __init__(self, kind: str, name: str, valid: Sequence[str], context: str = "", hint: str | None = None) -> None:
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
