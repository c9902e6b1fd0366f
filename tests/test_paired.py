"""dropblock.paired: per-image differences from a baseline, checked against hand-computed numbers."""

from __future__ import annotations

import math
import statistics

import pytest

from dropblock.paired import PairedDiff, comparisons, paired_differences, paired_json
from dropblock.sweep import ImageRow, Setting


def _r(image, method, block, kp, kl, agreement=1.0, accuracy=None, layer="L"):
    return ImageRow(image, layer, Setting(method, block, kp), 4, 1 - kp, kl, agreement, accuracy)


def test_series_against_the_baseline_then_block_sizes_against_the_smallest():
    series = [("dropblock", 1), ("dropblock", 3), ("dropblock", 7), ("dropout", None), ("cutout-input", None)]
    assert comparisons(series, ("dropout", None)) == [
        (("dropblock", 1), ("dropout", None)), (("dropblock", 3), ("dropout", None)),
        (("dropblock", 7), ("dropout", None)), (("cutout-input", None), ("dropout", None)),
        (("dropblock", 3), ("dropblock", 1)), (("dropblock", 7), ("dropblock", 1))]
    # with block 1 as the baseline, its pairs are not repeated
    assert comparisons(series, ("dropblock", 1)) == [
        (("dropblock", 3), ("dropblock", 1)), (("dropblock", 7), ("dropblock", 1)),
        (("dropout", None), ("dropblock", 1)), (("cutout-input", None), ("dropblock", 1))]


def test_mean_se_and_positive_count_of_per_image_differences():
    """Three images at keep_prob 0.7: differences 0.3, 0.1 and -0.1 in KL; the mean, the sample SE and the
    count of positive ones as computed by hand. Accuracy only where both rows have a label; keep_prob 1
    (every series is the clean network) gives no row; an image the baseline lacks is left out."""
    rows = [_r("a", "dropblock", 7, 0.7, 0.5, 0.5, 1.0), _r("a", "dropout", None, 0.7, 0.2, 1.0, 1.0),
            _r("b", "dropblock", 7, 0.7, 0.4, 0.75), _r("b", "dropout", None, 0.7, 0.3, 0.75),
            _r("c", "dropblock", 7, 0.7, 0.1, 1.0, 0.0), _r("c", "dropout", None, 0.7, 0.2, 0.5, 0.5),
            _r("d", "dropblock", 7, 0.7, 9.0),  # no baseline row for d
            _r("a", "dropblock", 7, 1.0, 0.0), _r("a", "dropout", None, 1.0, 0.0)]
    out = {d.metric: d for d in paired_differences(rows, ("dropout", None))}
    assert set(out) == {"kl", "agreement", "accuracy"}
    kl = out["kl"]
    assert (kl.series, kl.baseline, kl.layer, kl.keep_prob, kl.images, kl.positive) == (
        ("dropblock", 7), ("dropout", None), "L", 0.7, 3, 2)
    assert kl.mean == pytest.approx(0.1)
    assert kl.se == pytest.approx(statistics.stdev([0.3, 0.1, -0.1]) / math.sqrt(3))
    agreement = out["agreement"]
    assert agreement.mean == pytest.approx((-0.5 + 0.0 + 0.5) / 3) and agreement.positive == 1
    accuracy = out["accuracy"]
    assert (accuracy.images, accuracy.mean, accuracy.positive) == (2, pytest.approx(-0.25), 0)
    assert paired_json(kl) == {"series": "dropblock:7", "baseline": "dropout", "layer": "L", "keep_prob": 0.7,
                               "metric": "kl", "mean": kl.mean, "se": kl.se, "positive": 2, "images": 3}


def test_one_image_has_no_se_and_layers_keep_their_order():
    rows = [_r("a", "cutout", None, 0.9, 0.3, layer=layer) for layer in ("late", "early")]
    rows += [_r("a", "dropout", None, 0.9, 0.1, layer=layer) for layer in ("late", "early")]
    out = [d for d in paired_differences(rows, ("dropout", None), layers=["early", "late"]) if d.metric == "kl"]
    assert [d.layer for d in out] == ["early", "late"]
    assert out[0] == PairedDiff(("cutout", None), ("dropout", None), "early", 0.9, "kl", pytest.approx(0.2), None, 1, 1)
