"""Argument checks shared by the library: each raises ValueError naming the argument and its value."""

from __future__ import annotations

import math
import operator
from typing import Any

from dropblock.errors import UsageError


def check_probability(value: Any, name: str = "p") -> float:
    """Return ``value`` as a float in [0, 1), or raise ValueError."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be a number in [0, 1), got {value!r}")
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not (0.0 <= p < 1.0) or math.isnan(p):
        raise UsageError(f"{name} must be in [0, 1), got {value!r}")
    return p


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int >= 1 (ints and integer numpy/torch scalars only), or raise ValueError."""
    if isinstance(value, bool):
        raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise UsageError(f"{name} must be an integer >= 1, got {value!r}") from None
    if n < 1:
        raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
    return n


SEED_MAX = 2**64 - 1
"""The largest seed: torch generators keep 64 bits (and take -1 as 2**64 - 1, so negatives are refused)."""


def check_seed(value: Any, name: str = "seed") -> int:
    """Return ``value`` as an int in [0, SEED_MAX] (ints and integer numpy/torch scalars only), or raise ValueError."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None or not 0 <= n <= SEED_MAX:
        raise UsageError(f"{name} must be an integer in [0, 2**64 - 1], got {value!r}")
    return n


def check_eps(value: Any, name: str = "eps") -> float:
    """Return ``value`` as a finite float > 0, or raise ValueError. The rescale numel / (eps + kept)
    needs it when a draw drops every unit (torchvision's default is 1e-6)."""
    try:
        eps = None if isinstance(value, (bool, str, bytes)) else float(value)
    except (TypeError, ValueError):
        eps = None
    if eps is None or not (0.0 < eps < math.inf):
        raise UsageError(f"{name} must be a finite number > 0 (e.g. 1e-6), got {value!r}")
    return eps


def check_map_size(height: Any, width: Any) -> tuple[int, int]:
    """Return (height, width) as ints >= 1, or raise ValueError."""
    return check_positive_int(height, "height"), check_positive_int(width, "width")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, or raise ValueError listing them."""
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_gamma(value: Any, modes: tuple[str, ...]) -> str | float:
    """Return ``value`` if it names one of ``modes`` or is a number in [0, 1], or raise ValueError."""
    if isinstance(value, str) and value in modes:
        return value
    if not isinstance(value, (str, bool)):
        try:
            if 0.0 <= float(value) <= 1.0:
                return value
        except (TypeError, ValueError):
            pass
    named = ", ".join(repr(m) for m in modes)
    raise UsageError(f"gamma must be {named} or a probability in [0, 1], got {value!r}")
