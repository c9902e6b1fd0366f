"""Paired comparisons of sweep series: every setting sees the same images, so two series are compared by
the per-image difference of their means, not by two unpaired means.

For a series S, a baseline B, a layer and a keep_prob below 1: over the images that have both rows, the
difference d_i = metric(S, image i) - metric(B, image i) of each row's mean over its masks; the result is
the mean of the d_i, its standard error (sample std / sqrt(n), None from one image), and how many d_i are
> 0. Metrics: ``kl`` (nats), ``agreement`` and ``accuracy`` (fractions; accuracy over the images with a
label). keep_prob 1 is left out (every series is then the clean network: each d_i is 0).

:func:`paired_differences` compares every series with the baseline, and each block size of a block
method (DropBlock, Cutout on the input with DropBlock) with its smallest block size. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dropblock.stats import MeanSE
from dropblock.sweep import BLOCK_METHODS, ImageRow, series_name

__all__ = ["PAIRED_METRICS", "PairedDiff", "paired_differences", "comparisons", "paired_json"]

PAIRED_METRICS = ("kl", "agreement", "accuracy")

Series = tuple[str, "int | None"]


@dataclass(frozen=True)
class PairedDiff:
    """``series`` minus ``baseline`` (each (method, block size)) at ``layer`` and ``keep_prob``, in
    ``metric``: ``mean`` and ``se`` (None from one image) of the per-image differences, ``positive``
    (how many are > 0) and ``images`` (how many images have both)."""

    series: Series
    baseline: Series
    layer: str
    keep_prob: float
    metric: str
    mean: float
    se: float | None
    positive: int
    images: int


def comparisons(series: Sequence[Series], baseline: Series) -> list[tuple[Series, Series]]:
    """(series, baseline) pairs in ``series`` order: every series against ``baseline``, then each block size
    of a block method against that method's smallest block size (unless that pair is already there)."""
    pairs = [(s, baseline) for s in series if s != baseline]
    for method in BLOCK_METHODS:
        sizes = sorted(b for m, b in series if m == method)
        for b in sizes[1:]:
            pair = ((method, b), (method, sizes[0]))
            if (method, sizes[0]) != baseline and pair not in pairs:
                pairs.append(pair)
    return pairs


def paired_differences(rows: Iterable[ImageRow], baseline: Series,
                       layers: Sequence[str] | None = None) -> list[PairedDiff]:
    """Every :func:`comparisons` pair at every layer (in ``layers`` order, then as found) and keep_prob below
    1 (falling), for each of :data:`PAIRED_METRICS` with at least one image; a repeated (image, layer,
    setting) counts once (the first row)."""
    table: dict[tuple[str, Series, float], dict[str, ImageRow]] = {}
    for row in rows:
        table.setdefault((row.layer, row.setting.series, row.setting.keep_prob), {}).setdefault(row.image, row)
    order = list(dict.fromkeys([*(layers or ()), *(layer for layer, _, _ in table)]))
    series = list(dict.fromkeys(s for _, s, _ in table))
    out = []
    for layer in order:
        keep_probs = sorted({kp for (lay, _, kp) in table if lay == layer and kp < 1.0}, reverse=True)
        for a, b in comparisons(series, baseline):
            for kp in keep_probs:
                mine, theirs = table.get((layer, a, kp)), table.get((layer, b, kp))
                if mine and theirs:
                    out += _diffs(a, b, layer, kp, mine, theirs)
    return out


def _diffs(a: Series, b: Series, layer: str, kp: float, mine: dict[str, ImageRow],
           theirs: dict[str, ImageRow]) -> list[PairedDiff]:
    out = []
    for metric in PAIRED_METRICS:
        d = [getattr(mine[i], metric) - getattr(theirs[i], metric) for i in mine
             if i in theirs and getattr(mine[i], metric) is not None and getattr(theirs[i], metric) is not None]
        if d:
            stat = MeanSE.of(d)
            out.append(PairedDiff(a, b, layer, kp, metric, stat.mean, stat.se if stat.n > 1 else None,
                                  sum(v > 0 for v in d), stat.n))
    return out


def paired_json(d: PairedDiff) -> dict:
    """A JSON-ready dict: series and baseline (``dropout``, ``dropblock:7``), layer, keep_prob, metric, mean,
    se (null from one image), positive, images."""
    return {"series": series_name(d.series), "baseline": series_name(d.baseline), "layer": d.layer,
            "keep_prob": d.keep_prob, "metric": d.metric, "mean": d.mean, "se": d.se, "positive": d.positive,
            "images": d.images}
