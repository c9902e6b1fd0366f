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


def measure_until_sharp(draw, expected: float, *, pilot: int = 4000, chunk: int = 50000, bias: float = 0.02):
    """Mean and standard error of per-mask drop rates, drawing until a relative ``bias`` would stand
    4.5 standard errors out. ``draw(k)`` returns (k', H, W) bool dropped masks (k' >= 1).
    Also returns the per-unit drop frequency (H, W) and the number of masks."""
    import torch

    rates, total, n = [], None, 0

    def take(k):
        nonlocal total, n
        d = draw(k)
        rates.append(d.reshape(d.shape[0], -1).double().mean(dim=1))
        s = d.double().sum(dim=0)
        total = s if total is None else total + s
        n += d.shape[0]

    take(pilot)
    std = torch.cat(rates).std().item()
    needed = int((4.5 * std / (bias * expected)) ** 2) + 1
    while n < needed:
        take(chunk)
    r = torch.cat(rates)
    return r.mean().item(), r.std().item() / math.sqrt(len(r)), (total / n).numpy(), n


def assert_per_unit(freq, prob, n: int, *, z: float = 5.0, what: str = "per-unit drop frequency") -> None:
    """Each unit's drop frequency over n masks matches its exact probability within z standard errors."""
    import numpy as np

    se = np.sqrt(np.clip(prob * (1 - prob), 1e-300, None) / n)
    exact = (prob <= 0) | (prob >= 1)
    assert np.all(freq[exact] == prob[exact]), f"{what}: units that can never (or must) drop did not"
    worst = np.max(np.abs(freq - prob)[~exact] / se[~exact], initial=0.0)
    assert worst < z, f"{what}: the worst unit is {worst:.1f} standard errors from its exact probability"
