"""dropblock.viz.sweep: the Figure 5 style figure."""

from __future__ import annotations

import numpy as np
import pytest

from dropblock.stats import MeanSE
from dropblock.sweep import Setting, SweepPoint
from dropblock.viz.sweep import series_colors, sweep_figure
from figures import assert_png_size, save_png


def _point(method, block, kp, kl, images=3, accuracy=None):
    se = 0.01 if images > 1 else 0.0
    return SweepPoint("l", Setting(method, block, kp), images, images * 4, MeanSE(1 - kp, se, images),
                      MeanSE(kl, se, images), MeanSE(1 - kl, se, images),
                      None if accuracy is None else MeanSE(accuracy, se, images))


POINTS = [_point(m, b, kp, (1 - kp) * f) for m, b, f in (("dropblock", 1, 0.5), ("dropblock", 7, 2.0),
                                                          ("dropout", None, 0.4))
          for kp in (1.0, 0.9, 0.8)]


def test_one_panel_per_metric_one_line_per_series(tmp_path):
    fig = sweep_figure(POINTS, model="m", layer="l", images=3, masks=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["top-1 agreement with the clean network", "KL(clean ‖ after), nats", "realized drop rate"]
    kl_ax = fig.axes[1]
    lines = {line.get_label(): line for line in kl_ax.get_lines()}
    assert set(lines) == {"DropBlock, block 1", "DropBlock, block 7", "Dropout"}
    x, y = lines["DropBlock, block 7"].get_data()
    assert list(x) == [1.0, 0.9, 0.8] and np.allclose(y, [0.0, 0.2, 0.4])
    assert kl_ax.get_xlim()[0] > kl_ax.get_xlim()[1]  # keep_prob falls to the right
    assert len(kl_ax.collections) == 3  # a ± 1 SE band per series
    assert "target (1 − keep_prob)" in [line.get_label() for line in fig.axes[2].get_lines()]
    assert len(fig.legends) == 1
    assert_png_size(save_png(fig, tmp_path / "s.png", 60), fig, 60)


def test_accuracy_panel_only_with_labels_and_no_band_from_one_image():
    labelled = POINTS[:-1] + [_point("dropout", None, 0.8, 0.08, accuracy=0.5)]
    assert "top-1 accuracy" in [ax.get_title() for ax in sweep_figure(labelled, model="m", layer="l", images=3, masks=4).axes]
    one = [_point("cutout", None, kp, 0.1, images=1) for kp in (1.0, 0.9)]
    fig = sweep_figure(one, model="m", layer="l", images=1, masks=4)
    assert all(len(ax.collections) == 0 for ax in fig.axes) and "one image: no band" in fig._suptitle.get_text()
    with pytest.raises(ValueError):
        sweep_figure([], model="m", layer="l", images=0, masks=4)


def test_block_sizes_go_from_light_to_dark_blue():
    colors = series_colors([("dropblock", 7), ("dropblock", 1), ("dropout", None)])
    assert sum(colors[("dropblock", 1)][:3]) > sum(colors[("dropblock", 7)][:3])
    assert colors[("dropout", None)] == "#E69F00"


def test_target_drawn_over_the_series_and_coinciding_series_stay_distinguishable():
    """The drop-rate panel's target line lies above every series (its legend entry names something one
    can see), and DropBlock with block 1 and dropout, which often coincide, differ in dash and in size:
    the first series drawn (underneath) has the larger marker and wider line, so it shows around one
    drawn over it. Fails if the target goes back under the series (zorder 1) or the styles become equal."""
    same = [_point(m, b, kp, 0.1) for m, b in (("dropblock", 1), ("dropout", None)) for kp in (1.0, 0.9, 0.8)]
    fig = sweep_figure(same, model="m", layer="l", images=3, masks=4)
    drop_ax = fig.axes[-1]
    lines = {line.get_label(): line for line in drop_ax.get_lines()}
    target = lines.pop("target (1 − keep_prob)")
    assert all(target.get_zorder() > line.get_zorder() for line in lines.values())
    block1, dropout = lines["DropBlock, block 1"], lines["Dropout"]
    np.testing.assert_array_equal(block1.get_ydata(), dropout.get_ydata())  # they coincide here
    assert block1.get_zorder() < dropout.get_zorder()
    assert block1.get_markersize() > dropout.get_markersize() and block1.get_linewidth() > dropout.get_linewidth()
    assert block1.get_linestyle() == "-" and dropout.get_linestyle() != "-"
    assert block1.get_marker() != dropout.get_marker()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["DropBlock, block 1", "Dropout", "target (1 − keep_prob)"]
