"""The DropBlock gamma math, exact: Equation 1, the per-unit drop probability, and the gamma that hits p.

No torch here. Conventions (Ghiasi et al. 2018, Algorithm 1): a seed falls with probability
``gamma`` at every position where a whole ``bh x bw`` block fits; the block at seed ``(r, c)``
covers rows ``r .. r + bh - 1`` and columns ``c .. c + bw - 1``. A block larger than the map is
clipped to it, each side separately: ``bh = min(block_size, H)``, ``bw = min(block_size, W)``.

Equation 1 counts ``bh * bw`` dropped units per seed, as if blocks never overlapped, so the
realized drop rate is below p. Exactly, unit (i, j) survives only if every seed whose block
covers it is empty: ``P(drop i, j) = 1 - (1 - gamma) ** (n_r(i) * n_c(j))``, where ``n_r(i)``
counts the seed rows whose block covers row i (likewise ``n_c``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from dropblock.errors import UsageError
from dropblock._checks import check_map_size, check_positive_int, check_probability


def clip_block(block_size: int, height: int, width: int) -> tuple[int, int]:
    """The block actually dropped on an H x W map: ``(min(b, H), min(b, W))``."""
    return _clipped(*_checked(block_size, height, width))


def coverage_counts(length: int, block: int, seed_lo: int, seed_hi: int, before: int) -> np.ndarray:
    """How many seed positions cover each index of one axis.

    Seeds may fall at ``seed_lo .. seed_hi`` (inclusive); the seed at ``s`` drops
    ``s - before .. s - before + block - 1``, clipped to ``0 .. length - 1``.
    Returns an int64 array of shape (length,).
    """
    i = np.arange(length, dtype=np.int64)
    first = np.maximum(seed_lo, i + before - block + 1)
    last = np.minimum(seed_hi, i + before)
    return np.maximum(last - first + 1, 0)


def _grouped(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, freq = np.unique(counts, return_counts=True)
    return values.astype(np.float64), freq.astype(np.float64)


def drop_rate_from_counts(gamma: float, rows: np.ndarray, cols: np.ndarray) -> float:
    """Mean of ``1 - (1 - gamma) ** (rows[i] * cols[j])`` over the map, in O(distinct counts^2)."""
    if gamma <= 0.0:
        return 0.0
    rv, rf = _grouped(rows)
    cv, cf = _grouped(cols)
    k = np.outer(rv, cv)
    if gamma >= 1.0:
        survive = (k == 0).astype(np.float64)
    else:
        survive = np.exp(k * math.log1p(-gamma))
    weight = np.outer(rf, cf) / (rows.size * cols.size)
    return float(1.0 - (weight * survive).sum())


def _valid_counts(bh: int, bw: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows = coverage_counts(height, bh, 0, height - bh, 0)
    cols = coverage_counts(width, bw, 0, width - bw, 0)
    return rows, cols


def _clipped(block_size: int, height: int, width: int) -> tuple[int, int]:
    return min(block_size, height), min(block_size, width)


def _checked(block_size, height, width) -> tuple[int, int, int]:
    """block_size, height, width (height when width is None) checked to be ints >= 1."""
    width = height if width is None else width
    return (check_positive_int(block_size, "block_size"), *check_map_size(height, width))


def gamma_paper_unchecked(p: float, block_size: int, height: int, width: int) -> float:
    """:func:`gamma_paper` for arguments already checked."""
    bh, bw = _clipped(block_size, height, width)
    return p * height * width / (bh * bw * (height - bh + 1) * (width - bw + 1))


def gamma_paper(p: float, block_size: int, height: int, width: int | None = None) -> float:
    """Equation 1 for an H x W map: ``p * H * W / (bh * bw * (H - bh + 1) * (W - bw + 1))``.

    ``width`` defaults to ``height`` (the paper's square maps). Never above p.
    """
    return gamma_paper_unchecked(check_probability(p), *_checked(block_size, height, width))


def drop_probability_map(gamma: float, block_size: int, height: int, width: int | None = None) -> np.ndarray:
    """Exact probability that each unit is dropped, shape (H, W), float64."""
    block_size, height, width = _checked(block_size, height, width)
    rows, cols = _valid_counts(*_clipped(block_size, height, width), height, width)
    k = np.outer(rows, cols).astype(np.float64)
    if gamma >= 1.0:
        return (k > 0).astype(np.float64)
    return -np.expm1(k * math.log1p(-gamma))


def expected_drop_rate(gamma: float, block_size: int, height: int, width: int | None = None) -> float:
    """Exact expected fraction of dropped units for seed probability ``gamma`` (the map's mean)."""
    return expected_drop_rate_unchecked(float(gamma), *_checked(block_size, height, width))


@lru_cache(maxsize=4096)
def expected_drop_rate_unchecked(gamma: float, block_size: int, height: int, width: int) -> float:
    """:func:`expected_drop_rate` for arguments already checked (cached: every expected-rescale call needs it)."""
    rows, cols = _valid_counts(*_clipped(block_size, height, width), height, width)
    return drop_rate_from_counts(gamma, rows, cols)


def solve_gamma(p: float, rows: np.ndarray, cols: np.ndarray, what: str = "this block and map") -> float:
    """The seed probability whose exact expected drop rate is p (checked, in [0, 1)), by bisection
    (the rate is monotone in gamma)."""
    if p == 0.0:
        return 0.0
    reachable = drop_rate_from_counts(1.0, rows, cols)
    if p >= reachable:
        raise UsageError(
            f"drop rate {p:g} is unreachable for {what}: at most {reachable:.6g} of the units can be dropped"
        )
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if drop_rate_from_counts(mid, rows, cols) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@lru_cache(maxsize=1024)
def gamma_exact_unchecked(p: float, block_size: int, height: int, width: int) -> float:
    """:func:`gamma_exact` for arguments already checked (cached)."""
    rows, cols = _valid_counts(*_clipped(block_size, height, width), height, width)
    return solve_gamma(p, rows, cols, f"block {block_size} on a {height}x{width} map")


def gamma_exact(p: float, block_size: int, height: int, width: int | None = None) -> float:
    """The gamma whose exact expected drop rate equals p, overlaps and edges included.

    Raises ValueError when p cannot be reached (never for p < 1 with valid-region seeds).
    """
    return gamma_exact_unchecked(check_probability(p), *_checked(block_size, height, width))


GAMMA_MODES = ("paper", "exact")
"""Gamma by name: ``"paper"`` (Equation 1) or ``"exact"`` (the exact expected drop rate is p)."""


def resolve_gamma(gamma: str | float, p: float, block_size: int, height: int, width: int) -> float:
    """The seed probability for a gamma given by name (one of GAMMA_MODES) or as a float in [0, 1].

    p, block_size, height and width must be checked already (the public entry points do that)."""
    if gamma == "paper":
        return gamma_paper_unchecked(p, block_size, height, width)
    if gamma == "exact":
        return gamma_exact_unchecked(p, block_size, height, width)
    if isinstance(gamma, str):
        raise UsageError(f"gamma must be 'paper', 'exact' or a probability in [0, 1], got {gamma!r}")
    g = float(gamma)
    if not 0.0 <= g <= 1.0:
        raise UsageError(f"gamma must be 'paper', 'exact' or a probability in [0, 1], got {gamma!r}")
    return g


def clip_note(block_size: int, height: int, width: int, unit: str = "", what: str = "map") -> str | None:
    """The one wording of "this block does not fit", or None when it fits: e.g. "block 9 is larger
    than the 7x7 map: clipped to 7x7". ``unit`` follows the block size (" px"); ``what`` names the
    map ("image", "map of layer3"). Sizes read height x width."""
    bh, bw = min(block_size, height), min(block_size, width)
    if (bh, bw) == (block_size, block_size):
        return None
    order = "" if height == width else " (height x width)"
    return f"block {block_size}{unit} is larger than the {height}x{width} {what}{order}: clipped to {bh}x{bw}"


def _cutout_axis_probabilities(length: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """P(one hole covers row i), shape (H,), and P(it covers column j), shape (W,)."""
    half = length // 2
    q_rows = coverage_counts(height, length, 0, height - 1, half) / height
    q_cols = coverage_counts(width, length, 0, width - 1, half) / width
    return q_rows, q_cols


def cutout_probability_map(n_holes: int, length: int, height: int, width: int) -> np.ndarray:
    """Exact probability that Cutout erases each unit, shape (H, W), float64.

    Each hole's centre (y, x) is uniform over the map; the hole covers rows
    ``y - length // 2 .. y - length // 2 + length - 1`` (likewise columns), clipped to the map.
    Holes are independent.
    """
    n_holes = check_positive_int(n_holes, "n_holes")
    length = check_positive_int(length, "length")
    height, width = check_map_size(height, width)
    q_rows, q_cols = _cutout_axis_probabilities(length, height, width)
    return 1.0 - (1.0 - np.outer(q_rows, q_cols)) ** n_holes


def cutout_expected_drop_rate(n_holes: int, length: int, height: int, width: int) -> float:
    """Exact expected fraction of the map that Cutout erases (below ``n * length^2 / (H W)``).

    The map's mean of ``1 - (1 - q_r(i) q_c(j)) ** n`` factors over rows and columns by the binomial
    theorem: ``1 - sum_k C(n, k) (-1)^k mean(q_r^k) mean(q_c^k)``, so no (H, W) map is built.
    """
    n_holes = check_positive_int(n_holes, "n_holes")
    length = check_positive_int(length, "length")
    height, width = check_map_size(height, width)
    return _cutout_rate(n_holes, length, height, width)


@lru_cache(maxsize=4096)  # a sweep asks for the same few (shape, rate) once per mask
def _cutout_rate(n_holes: int, length: int, height: int, width: int) -> float:
    q_rows, q_cols = _cutout_axis_probabilities(length, height, width)
    k = np.arange(n_holes + 1)
    row_moments = (q_rows[None, :] ** k[:, None]).mean(axis=1)
    col_moments = (q_cols[None, :] ** k[:, None]).mean(axis=1)
    terms = np.array([math.comb(n_holes, int(i)) * (-1) ** int(i) for i in k], dtype=np.float64)
    return float(min(max(1.0 - (terms * row_moments * col_moments).sum(), 0.0), 1.0))


def cutout_length_for(p: float, height: int, width: int, n_holes: int = 1) -> int:
    """The integer hole side whose exact expected erased fraction is closest to p (>= 1)."""
    p = check_probability(p)
    height, width = check_map_size(height, width)
    return _cutout_length(p, height, width, check_positive_int(n_holes, "n_holes"))


@lru_cache(maxsize=4096)
def _cutout_length(p: float, height: int, width: int, n_holes: int) -> int:
    lo, hi = 1, 2 * max(height, width) + 1  # a side of 2*max erases everything
    while lo < hi:  # first length whose rate reaches p (the rate rises with length)
        mid = (lo + hi) // 2
        if _cutout_rate(n_holes, mid, height, width) < p:
            lo = mid + 1
        else:
            hi = mid
    candidates = [n for n in (lo - 1, lo) if n >= 1]
    return min(candidates, key=lambda n: abs(_cutout_rate(n_holes, n, height, width) - p))


def linear_keep_prob(step: int, steps: int, target_keep_prob: float, start_keep_prob: float = 1.0) -> float:
    """Scheduled DropBlock: keep_prob falls linearly from ``start`` to ``target`` over ``steps`` steps.

    Step 0 gives ``start``; step ``steps`` and later give ``target``.
    """
    steps = check_positive_int(steps, "steps")
    if step < 0:
        raise UsageError(f"step must be >= 0, got {step!r}")
    t = min(step, steps) / steps
    return start_keep_prob + (target_keep_prob - start_keep_prob) * t
