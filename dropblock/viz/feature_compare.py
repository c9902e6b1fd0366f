"""The feature-map figure of ``compare --layer``: the methods side by side on one layer at one drop rate.

A first column shows the clean network; then one column per method. Rows: the fraction of channels
dropped per cell; the real masks of a few channels (the most active, the same for every method, so
DropBlock's blocks, dropout's scattered units, spatial dropout's whole channels and Cutout's one hole
can be told apart); what changed (mean activation before − after); the CAM before and after when
given; the top-1 class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from dropblock.viz.labels import METHOD_LABELS, describe
from dropblock.viz.panels import (
    cam_title, change_limit, draw_activation_mosaic, draw_mask_mosaic, drop_key, is_binary, mosaic,
    overlay_activation, overlay_cam, overlay_change, overlay_drop, shared_range, shorten,
)
from dropblock.viz.style import (
    SMALL_PT, SUPTITLE_PT, TITLE_PT, check_image, check_map, method_color, new_figure, plain, title_lines, wrap,
)

MOSAIC_COLS = 3
PANEL = 3.0  # inches


@dataclass
class FeatureColumn:
    """One column of :func:`_draw_feature_compare`.

    drop_fraction: (h, w) float in [0, 1], fraction of channels dropped per feature cell.
    act_after: (h, w) float, channel-mean activation after dropping.
    top1_label/top1_prob: the network's top-1 class after dropping, probability in [0, 1].
    channel_keep: (k, h, w) bool, the masks of the figure's channels (True kept), or None.
    cam: a :class:`~dropblock.cam.CamResult` of this method, or None.
    """

    method: str
    drop_fraction: np.ndarray
    act_after: np.ndarray
    top1_label: str
    top1_prob: float
    title: str
    channel_keep: np.ndarray | None = None
    cam: object | None = None


def _top1_bar(ax, label: str, prob: float, color: str, what: str) -> None:
    """A bar of a top-1 probability on a light full-width track."""
    ax.barh([0], [float(prob)], color=color, height=0.55)
    ax.barh([0], [1.0], color="0.92", height=0.55, zorder=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, 0.5)
    ax.set_title(f"top-1 {what}: {shorten(label, 24)}  {float(prob):.1%}", fontsize=SMALL_PT + 0.5, loc="left")
    plain(ax)


def _mask_rows(fig, grid, crop, columns, drops, channels, channel_ids, row_of) -> None:
    """The dropped-fraction row and, with channels, the channel-mask row (first column: the input and
    the channels' activations before)."""
    ax = fig.add_subplot(grid[row_of["dropped"], 0])
    ax.imshow(crop, interpolation="nearest")
    ax.set_title("input (the network's crop)", fontsize=TITLE_PT)
    ax.set_ylabel("fraction of channels dropped", fontsize=SMALL_PT + 0.5)
    plain(ax)
    axes = []
    for j, (col, drop) in enumerate(zip(columns, drops), start=1):
        axes.append(fig.add_subplot(grid[row_of["dropped"], j]))
        im = overlay_drop(axes[-1], crop, drop)
        axes[-1].set_title(wrap(col.title, PANEL), fontsize=TITLE_PT)
        plain(axes[-1], frame=method_color(col.method))
    drop_key(fig, im, all(is_binary(d) for d in drops), ax=axes)
    if channels is None:
        return
    ax = fig.add_subplot(grid[row_of["channels"], 0])
    draw_activation_mosaic(ax, channels, MOSAIC_COLS)
    ids = ", ".join(str(i) for i in channel_ids) if channel_ids is not None else f"{len(channels)}"
    ax.set_title(wrap(f"channels {ids}: activation before (each its own scale)", PANEL), fontsize=SMALL_PT + 0.5)
    ax.set_ylabel("masks of the most\nactive channels", fontsize=SMALL_PT + 0.5)
    plain(ax)
    axes = []
    for j, col in enumerate(columns, start=1):
        axes.append(fig.add_subplot(grid[row_of["channels"], j]))
        im = draw_mask_mosaic(axes[-1], col.channel_keep, MOSAIC_COLS)
        plain(axes[-1])
    cb = fig.colorbar(im, ax=axes, location="right", aspect=12, pad=0.02)
    cb.set_ticks([0.25, 0.75], labels=["kept", "dropped"])
    cb.ax.tick_params(labelsize=SMALL_PT)


def _change_row(fig, grid, row: int, crop, act_before, acts, note: str) -> None:
    """First column: the mean activation before; then before − after per method (one symmetric scale)."""
    ax = fig.add_subplot(grid[row, 0])
    overlay_activation(ax, crop, act_before, *shared_range(act_before))
    ax.set_title("mean activation before (bright: high)", fontsize=TITLE_PT)
    ax.set_ylabel("what changed", fontsize=SMALL_PT + 0.5)
    plain(ax)
    changes = [act_before - a for a in acts]
    limit = change_limit(*changes)
    axes = []
    for j, change in enumerate(changes, start=1):
        axes.append(fig.add_subplot(grid[row, j]))
        im = overlay_change(axes[-1], crop, change, limit)
        axes[-1].set_title(f"mean activation before − after{note}", fontsize=SMALL_PT + 0.5)
        plain(axes[-1])
    cb = fig.colorbar(im, ax=axes, location="right", aspect=20, pad=0.02)
    cb.set_label("before − after (red: lower after, blue: higher after)", fontsize=SMALL_PT)
    cb.ax.tick_params(labelsize=SMALL_PT)


def _cam_row(fig, grid, row: int, crop, columns) -> None:
    first = columns[0].cam
    ax = fig.add_subplot(grid[row, 0])
    overlay_cam(ax, crop, first.before, mark=[first.peak_before])
    ax.set_title(wrap(cam_title(first, after=False), PANEL), fontsize=SMALL_PT + 0.5)
    ax.set_ylabel("class activation map", fontsize=SMALL_PT + 0.5)
    plain(ax)
    axes = []
    for j, col in enumerate(columns, start=1):
        axes.append(fig.add_subplot(grid[row, j]))
        im = overlay_cam(axes[-1], crop, col.cam.after, mark=[col.cam.peak_after, col.cam.peak_before])
        axes[-1].set_title(cam_title(col.cam, after=True), fontsize=SMALL_PT + 0.5)
        plain(axes[-1])
    cb = fig.colorbar(im, ax=[ax, *axes], location="right", aspect=20, pad=0.02)
    cb.set_label("CAM, 0..1 (+ peak; ○ peak before)", fontsize=SMALL_PT)
    cb.ax.tick_params(labelsize=SMALL_PT)


def _draw_feature_compare(
    crop: np.ndarray, columns: Sequence[FeatureColumn], *, act_before: np.ndarray,
    top1_before: tuple[str, float] | None = None, channels_before: np.ndarray | None = None,
    channel_ids: Sequence[int] | None = None, suptitle: str | None = None, note: str = "",
) -> Figure:
    """The clean network, then one column per method.

    crop: (S, S, 3) uint8. act_before: (h, w) channel-mean activation before; each column's
    drop_fraction and act_after are (h, w) too, and its change before − after is drawn on one
    symmetric scale shared by the columns. top1_before: (label, probability). channels_before:
    (k, h, w) activations of k channels whose masks (``channel_keep``, every column) get a row;
    channel_ids: their numbers. CAMs get a row when every column has one. note: appended to the titles
    of the panels after (change and top-1), e.g. " (mask 1 of 8)" when they show one mask of several.
    """
    crop = check_image(crop)
    if not columns:
        raise ValueError("a feature compare figure needs at least one column")
    before = check_map(act_before, "act_before")
    drops = [check_map(c.drop_fraction, f"drop_fraction of {c.method!r}", before.shape) for c in columns]
    acts = [check_map(c.act_after, f"act_after of {c.method!r}", before.shape) for c in columns]
    channels = None if channels_before is None else np.asarray(channels_before, dtype=np.float64)
    if channels is not None and any(c.channel_keep is None or np.shape(c.channel_keep) != channels.shape
                                    for c in columns):
        raise ValueError(f"every column needs channel_keep of shape {channels.shape} like channels_before")
    rows = ["dropped"] + (["channels"] if channels is not None else []) + ["change"]
    rows += (["cam"] if all(c.cam is not None for c in columns) else []) + ["top1"]
    row_of = {name: i for i, name in enumerate(rows)}
    tile = mosaic(channels, MOSAIC_COLS) if channels is not None else None
    heights = {"dropped": PANEL, "change": PANEL, "cam": PANEL, "top1": 0.42,
               "channels": PANEL * (tile.shape[0] / tile.shape[1] if tile is not None else 0)}
    titles = [wrap(c.title, PANEL) for c in columns]
    n = len(columns) + 1
    fig = new_figure((n * PANEL + 1.6, sum(heights[r] for r in rows) + 1.0 + 0.18 * title_lines(*titles)
                      + 0.35 * len(rows) + (0.4 if suptitle else 0)))
    grid = fig.add_gridspec(len(rows), n, height_ratios=[heights[r] for r in rows])
    _mask_rows(fig, grid, crop, columns, drops, channels, channel_ids, row_of)
    _change_row(fig, grid, row_of["change"], crop, before, acts, note)
    if "cam" in row_of:
        _cam_row(fig, grid, row_of["cam"], crop, columns)
    if top1_before is not None:
        _top1_bar(fig.add_subplot(grid[row_of["top1"], 0]), top1_before[0], top1_before[1], "0.55", "before")
    for j, col in enumerate(columns, start=1):
        _top1_bar(fig.add_subplot(grid[row_of["top1"], j]), col.top1_label, col.top1_prob, method_color(col.method),
                  f"after{note}")
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_PT)
    return fig


def feature_compare_figure(effects: list, image_name: str, cams: Sequence | None = None) -> Figure:
    """The ``compare --layer`` figure of LayerEffects (one per method, the same image and layer) and,
    when given, their CAMs."""
    cols = []
    for i, effect in enumerate(effects):
        first, n = effect.first, effect.stats.samples
        params = describe(effect.method, effect.params, effect.gamma, unit="cells")
        title = f"{METHOD_LABELS[effect.method]}: {params}\n" + ("" if n == 1 else f"mask 1 of {n}: ")
        title += f"dropped {100 * first.drop_rate:.1f}%, KL {first.kl:.3g}"
        if n > 1:
            title += f"\nmean of {n}: dropped {100 * effect.stats.drop_rate.mean:.1f}%, KL {effect.stats.kl.mean:.3g}"
        cols.append(FeatureColumn(
            method=effect.method, drop_fraction=first.drop_fraction, act_after=first.act_after,
            top1_label=first.predictions_after[0].label, top1_prob=first.predictions_after[0].prob,
            channel_keep=effect.channel_keep[:6], cam=None if cams is None else cams[i], title=title,
        ))
    first = effects[0]
    c, h, w = first.feature_shape
    before = first.predictions_before[0]
    return _draw_feature_compare(
        first.crop, cols, act_before=first.act_before, top1_before=(before.label, before.prob),
        channels_before=first.channels_before[:6], channel_ids=[int(i) for i in first.top_channels[:6]],
        suptitle=f"{image_name} on {first.model} {first.layer} ({c}x{h}x{w}), target drop rate {100 * first.p:g}%",
        note="" if first.stats.samples == 1 else f" (mask 1 of {first.stats.samples})",
    )
