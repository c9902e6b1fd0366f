"""Exact expected drop rates of the public DropBlock implementations, read from their sources.

Each convention is reduced to: the gamma it computes, the seed rows and columns it allows,
and where the block of a seed falls ("before": the seed at s drops ``s - before ..
s - before + k - 1``, clipped to the map). Seeds are independent Bernoulli(gamma), so
``P(drop i, j) = 1 - (1 - gamma) ** (n_r(i) * n_c(j))`` holds for all of them.
No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from dropblock._checks import check_map_size, check_positive_int, check_probability
from dropblock.gamma import coverage_counts, drop_rate_from_counts


@dataclass(frozen=True)
class ConventionRate:
    """One implementation's behaviour for a given p, block and map.

    ``drop_rate`` and ``gamma`` are None when the implementation refuses (or breaks on) that
    setting; ``note`` then says why.
    """

    name: str
    label: str
    gamma: float | None
    drop_rate: float | None
    note: str = ""


@dataclass(frozen=True)
class _Axis:
    block: int
    seed_lo: int
    seed_hi: int
    before: int


def _rate(name: str, label: str, gamma: float, h: int, w: int, rows: _Axis, cols: _Axis) -> ConventionRate:
    n_r = coverage_counts(h, rows.block, rows.seed_lo, rows.seed_hi, rows.before)
    n_c = coverage_counts(w, cols.block, cols.seed_lo, cols.seed_hi, cols.before)
    g = min(max(gamma, 0.0), 1.0)
    return ConventionRate(name, label, gamma, drop_rate_from_counts(g, n_r, n_c))


def torchvision_rate(p: float, b: int, h: int, w: int) -> ConventionRate:
    """torchvision.ops.drop_block2d: seeds in the valid region, Eq. 1, block min(b, H, W) square."""
    label = "torchvision.ops.drop_block2d"
    if b % 2 == 0:
        return ConventionRate("torchvision", label, None, None, "refuses even block sizes (ValueError)")
    k = min(b, h, w)
    if k % 2 == 0:
        return ConventionRate("torchvision", label, None, None, f"block clipped to {k} (even): shape error")
    gamma = p * h * w / (k * k * (h - k + 1) * (w - k + 1))
    return _rate("torchvision", label, gamma, h, w, _Axis(k, 0, h - k, 0), _Axis(k, 0, w - k, 0))


def timm_rate(p: float, b: int, h: int, w: int) -> ConventionRate:
    """timm.layers.drop_block_2d (1.0.23+): seeds anywhere, blocks clipped at the edges, Eq. 1."""
    kh, kw = min(b, h), min(b, w)
    gamma = p * h * w / (kh * kw * (h - kh + 1) * (w - kw + 1))
    return _rate(
        "timm", "timm.layers.drop_block_2d", gamma, h, w,
        _Axis(kh, 0, h - 1, kh // 2), _Axis(kw, 0, w - 1, kw // 2),
    )


def miguelvr_rate(p: float, b: int, h: int, w: int) -> ConventionRate:
    """miguelvr/dropblock DropBlock2D: seeds anywhere, gamma = p / b^2, block not clipped to the map."""
    gamma = p / (b * b)
    before = b // 2 if b % 2 else b // 2 - 1
    return _rate("miguelvr", "miguelvr/dropblock", gamma, h, w, _Axis(b, 0, h - 1, before), _Axis(b, 0, w - 1, before))


def tf_rate(p: float, b: int, h: int, w: int) -> ConventionRate:
    """The authors' TF code (tensorflow/tpu resnet_model.py): square maps only, valid centres, Eq. 1."""
    label = "tensorflow/tpu (the authors')"
    if h != w:
        return ConventionRate("tf", label, None, None, "square maps only (ValueError when H != W)")
    k = min(b, w)
    gamma = p * w * w / (k * k) / (w - k + 1) ** 2
    axis = _Axis(k, k // 2, w - (k - 1) // 2 - 1, k // 2)
    return _rate("tf", label, gamma, h, w, axis, axis)


def keras_cv_rate(p: float, b: int, h: int, w: int) -> ConventionRate:
    """keras-cv DropBlock2D: valid centres, but the row bound uses the width."""
    label = "keras-cv DropBlock2D"
    if b > h or b > w:
        return ConventionRate("keras_cv", label, None, None, "block larger than the map: NaN or no drops")
    gamma = p * w * h / (b * b) / ((w - b + 1) * (h - b + 1))
    rows = _Axis(b, b // 2, min(w - (b - 1) // 2, h) - 1, b // 2)  # the bug: bounded by the width
    cols = _Axis(b, b // 2, w - (b - 1) // 2 - 1, b // 2)
    return _rate("keras_cv", label, gamma, h, w, rows, cols)


CONVENTIONS = {
    "torchvision": torchvision_rate,
    "timm": timm_rate,
    "miguelvr": miguelvr_rate,
    "tf": tf_rate,
    "keras_cv": keras_cv_rate,
}


def convention_rates(p: float, block_size: int, height: int, width: int | None = None) -> list[ConventionRate]:
    """Every public convention's gamma and exact expected realized drop rate for target p."""
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    width = height if width is None else width
    height, width = check_map_size(height, width)
    return [fn(p, block_size, height, width) for fn in CONVENTIONS.values()]


def convention_drop_rates(p: float, block_size: int, height: int, width: int | None = None) -> dict[str, float | None]:
    """Convention name -> exact expected realized drop rate (None where it refuses the setting)."""
    return {r.name: r.drop_rate for r in convention_rates(p, block_size, height, width)}
