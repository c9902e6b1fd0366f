"""dropblock.viz.depth and the sweep figure's paired panel."""

from __future__ import annotations

import numpy as np

from dropblock.paired import PairedDiff
from dropblock.stats import MeanSE
from dropblock.sweep import Setting, SweepPoint
from dropblock.viz.depth import depth_figure
from dropblock.viz.sweep import sweep_figure
from figures import assert_png_size, save_png

LAYERS = {"blocks.2": 20, "blocks.8": 70, "head": 130}


def _point(layer, method, block, kp, kl):
    return SweepPoint(layer, Setting(method, block, kp), 3, 12, MeanSE(1 - kp, 0.01, 3), MeanSE(kl, 0.02, 3),
                      MeanSE(1 - kl, 0.03, 3), None)


def _diff(layer, block, kp, mean):
    return PairedDiff(("dropblock", block), ("dropout", None), layer, kp, "kl", mean, 0.01, 3, 3)


POINTS = [_point(layer, m, b, kp, depth * (1 - kp) * f)
          for layer, depth in (("blocks.2", 1.0), ("blocks.8", 2.0), ("head", 0.5))
          for m, b, f in (("dropblock", 1, 1.0), ("dropblock", 7, 3.0), ("dropout", None, 1.0))
          for kp in (1.0, 0.9, 0.7)]
PAIRED = [_diff(layer, b, kp, 0.1 * b * (1 - kp)) for layer in LAYERS for b in (1, 7) for kp in (0.9, 0.7)]


def test_depth_columns_per_keep_prob_x_is_the_layer_position(tmp_path):
    """One column per keep_prob below 1 (1 is the clean network, left out), rows agreement, KL and the paired
    KL difference; each line's x are the layers' call-order indices, labelled with their names. Fails if x
    were 0, 1, 2 (equal spacing would hide where the layers lie) or a keep_prob were mixed into another."""
    fig = depth_figure(POINTS, PAIRED, layers=LAYERS, baseline=("dropout", None), model="m", images=3, masks=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["top-1 agreement, keep_prob 0.9", "top-1 agreement, keep_prob 0.7",
                      "KL(clean ‖ after), nats, keep_prob 0.9", "KL(clean ‖ after), nats, keep_prob 0.7",
                      "KL − KL(Dropout), paired, keep_prob 0.9", "KL − KL(Dropout), paired, keep_prob 0.7"]
    kl_07 = {line.get_label(): line for line in fig.axes[3].get_lines()}
    x, y = kl_07["DropBlock, block 7"].get_data()
    assert list(x) == [20, 70, 130] and np.allclose(y, [0.9, 1.8, 0.45])
    assert [t.get_text() for t in fig.axes[5].get_xticklabels()] == ["blocks.2", "blocks.8", "head"]
    paired = {line.get_label(): line for line in fig.axes[5].get_lines()}
    assert np.allclose(paired["DropBlock, block 7"].get_ydata(), [0.21] * 3)
    assert "Dropout" not in paired  # the baseline is the zero line
    assert len(fig.legends) == 1
    assert_png_size(save_png(fig, tmp_path / "d.png", 60), fig, 60)


def test_sweep_figure_gains_a_paired_panel_against_the_baseline_only():
    """Rows against another baseline (block 7 minus block 1) are in the table, not in this panel."""
    one = [p for p in POINTS if p.layer == "head"]
    paired = [d for d in PAIRED if d.layer == "head"] + [
        PairedDiff(("dropblock", 7), ("dropblock", 1), "head", 0.7, "kl", 0.5, 0.1, 3, 3)]
    fig = sweep_figure(one, model="m", layer="head", images=3, masks=4, paired=paired, baseline=("dropout", None))
    ax = fig.axes[-1]
    assert ax.get_title() == "KL − KL(Dropout), paired, nats"
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"DropBlock, block 1", "DropBlock, block 7"}
    x, y = lines["DropBlock, block 7"].get_data()
    assert list(x) == [0.7, 0.9] and np.allclose(y, [0.7 * 0.3, 0.7 * 0.1])
    assert len(sweep_figure(one, model="m", layer="head", images=3, masks=4).axes) == len(fig.axes) - 1
