"""Statistical helpers for the tests: tolerances come from standard errors, never from guesses."""

from __future__ import annotations

import math

Z = 4.0  # a true expectation falls outside 4 standard errors with probability 6e-5


def assert_close_se(measured: float, expected: float, se: float, *, what: str = "value", z: float = Z) -> None:
    """measured equals expected within z standard errors."""
    assert se > 0, f"{what}: the standard error is zero; the test measures nothing"
    assert abs(measured - expected) <= z * se, (
        f"{what}: measured {measured:.6g}, expected {expected:.6g}, "
        f"off by {abs(measured - expected) / se:.1f} standard errors (se {se:.3g})"
    )


def assert_can_see_bias(expected: float, se: float, bias: float = 0.02, z: float = Z) -> None:
    """The test is sharp enough: a relative bias of ``bias`` would be more than z standard errors away."""
    assert abs(expected) * bias > z * se, (
        f"test too weak: a {bias:.0%} bias ({abs(expected) * bias:.3g}) is within {z} standard errors ({z * se:.3g})"
    )


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-300) / n)
