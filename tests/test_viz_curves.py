"""dropblock.viz.curves: the schedule and gamma sweep figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dropblock.viz import COLORS, save_figure
from dropblock.viz.curves import ScheduleSnapshot, _draw_gamma_sweep, _draw_schedule
from figures import assert_png_size, pixel_keep, random_image


def test_draw_schedule_with_snapshots(tmp_path: Path) -> None:
    steps = np.arange(0, 1001, 50)
    keep_probs = np.clip(1 - 0.1 * steps / 800, 0.9, 1)
    image = random_image(24, 32)
    snaps = [ScheduleSnapshot(s, float(np.clip(1 - 0.1 * s / 800, 0.9, 1)), pixel_keep(24, 32, 0.1, s))
             for s in (0, 400, 1000)]
    fig = _draw_schedule(steps, keep_probs, target=0.9, snapshots=snaps, image=image, title="schedule")
    assert len(fig.axes) == 1 + len(snaps)
    curve = fig.axes[0]
    line = curve.get_lines()[0]
    from matplotlib.colors import to_hex

    assert to_hex(line.get_color()) == COLORS["dropblock"].lower()
    assert any(l.get_linestyle() == "--" for l in curve.get_lines())  # target
    titles = [ax.get_title() for ax in fig.axes[1:]]
    assert "step 400" in titles[1] and "0.950" in titles[1]
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), image * snaps[1].keep[:, :, None])
    save_figure(fig, tmp_path / "schedule.png", dpi=60)


def test_draw_schedule_plain_and_without_image(tmp_path: Path) -> None:
    """Without snapshots: one axes, the curve and the dashed target, the legend where a falling curve
    leaves room. Snapshots without an image: the bare mask, dropped cells in COLORS['dropped'] and kept
    ones light grey. Fails if a thumbnail draws other cells or colours, if an empty thumbnail row is
    added, or if the curve, target or legend go missing."""
    from matplotlib.colors import to_rgb

    steps = np.arange(10)
    kp = np.linspace(1, 0.8, 10)
    fig = _draw_schedule(steps, kp, target=0.8)
    assert len(fig.axes) == 1
    curve, target = fig.axes[0].get_lines()
    np.testing.assert_array_equal(curve.get_ydata(), kp)
    assert target.get_linestyle() == "--" and list(target.get_ydata()) == [0.8, 0.8]
    fig.canvas.draw()  # the legend sits upper right, where a falling schedule leaves room
    leg, box = fig.axes[0].get_legend().get_window_extent(), fig.axes[0].get_window_extent()
    assert leg.x0 > (box.x0 + box.x1) / 2 and leg.y0 > (box.y0 + box.y1) / 2
    png = save_figure(fig, tmp_path / "a.png", dpi=50)
    assert_png_size(png, fig, 50)
    keep = pixel_keep(10, 10, 0.3)
    fig = _draw_schedule(steps, kp, target=0.8, snapshots=[ScheduleSnapshot(3, 0.93, keep)])
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "(a) step 3\nkeep_prob 0.930"
    rgb = np.asarray(fig.axes[1].images[0].get_array())
    dropped = np.rint(np.array(to_rgb(COLORS["dropped"])) * 255)
    assert (rgb[~keep] == dropped).all() and (rgb[keep] == 235).all() and 0 < (~keep).sum() < keep.size
    assert save_figure(fig, tmp_path / "b.svg").read_bytes()[:400].find(b"<svg") >= 0


def test_draw_gamma_sweep(tmp_path: Path) -> None:
    bs = np.array([1, 3, 5, 7, 9])
    paper = np.array([0.1, 0.092, 0.088, 0.085, 0.083])
    other = np.array([0.1, 0.1, np.nan, np.nan, 0.1])  # unsupported at 5 and 7
    measured = {"paper": (paper + 0.001, np.full(5, 0.002))}
    fig = _draw_gamma_sweep(bs, {"paper": paper, "exact": other}, target=0.1, title="sweep", measured=measured)
    ax = fig.axes[0]
    assert ax.get_title() == "sweep"
    ys = [l.get_ydata() for l in ax.get_lines() if len(l.get_xdata()) == 5]
    assert any(np.isnan(np.asarray(y, float)).sum() == 2 for y in ys)  # the gap is kept
    assert ax.yaxis.get_major_formatter()(0.1, 0).endswith("%")
    # legend sits outside the data area
    fig.canvas.draw()
    leg = ax.get_legend().get_window_extent()
    assert leg.x0 >= ax.get_window_extent().x1 - 1
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("target" in t for t in labels) and any("measured" in t for t in labels)
    save_figure(fig, tmp_path / "sweep.pdf")
