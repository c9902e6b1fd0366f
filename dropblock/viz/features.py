"""The feature-map figure of ``show --layer``: one regularizer on a CNN's feature maps.

Activations are (h, w) maps drawn over the network's (S, S, 3) uint8 input crop; the mask panel gives
the fraction of channels dropped at each feature cell, the change panel before − after, and the
channel rows the most active channels before, their own masks, and after. With a CAM, a second row
shows it before and after. The compare figure is in :mod:`dropblock.viz.feature_compare`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dropblock.viz.labels import METHOD_LABELS, describe
from dropblock.viz.panels import (
    cam_title, change_limit, draw_mask_mosaic, drop_key, is_binary, mosaic, overlay_activation, overlay_cam,
    overlay_change, overlay_drop, pred_bars, shared_range,
)
from dropblock.viz.style import (
    ACTIVATION_CMAP, SMALL_PT, SUPTITLE_PT, TITLE_PT, check_image, check_map, method_color, plain, wrap,
)

WIDTH = 13.0  # inches
PANEL = 3.8  # side of a panel over the crop, inches
LEFTS = (0.45, 4.6, 8.75)  # left edges of the three panels of a row
CHANNEL_ROWS_W = 6.9  # width of the channel rows


class _Sheet:
    """Axes and text placed in inches from the figure's top-left corner (a fixed layout: the
    constrained engine took about half of this figure's drawing time)."""

    def __init__(self, height: float) -> None:
        self.h = height
        self.fig = Figure(figsize=(WIDTH, height), dpi=100)
        FigureCanvasAgg(self.fig)

    def axes(self, left: float, top: float, width: float, height: float):
        return self.fig.add_axes((left / WIDTH, 1 - (top + height) / self.h, width / WIDTH, height / self.h))

    def text(self, x: float, y: float, s: str, **kw):
        return self.fig.text(x / WIDTH, 1 - y / self.h, s, **kw)

    def colorbar(self, mappable, left: float, top: float, label: str):
        """A horizontal colourbar 0.16 in high under a panel whose left edge is ``left``."""
        cb = self.fig.colorbar(mappable, cax=self.axes(left + 0.25, top, PANEL - 0.5, 0.16), orientation="horizontal")
        cb.ax.xaxis.set_major_locator(MaxNLocator(6))
        cb.set_label(label, fontsize=SMALL_PT)
        cb.ax.tick_params(labelsize=SMALL_PT)
        return cb


def _panel_row(sheet: _Sheet, top: float, titles: Sequence[str]):
    """Three panels at ``top`` (inches), titled (wrapped to the panel's width)."""
    axes = [sheet.axes(left, top, PANEL, PANEL) for left in LEFTS]
    for ax, title in zip(axes, titles):
        ax.set_title(wrap(title, PANEL + 0.1), fontsize=TITLE_PT)
        plain(ax)
    return axes


def _activation_row(sheet, top, crop, before, after, drop, text, method: str) -> None:
    """Activation before | fraction of channels dropped | before − after, with their keys."""
    ax_i, ax_m, ax_a = _panel_row(sheet, top, (text["image"], text["mask"], text["after"]))
    vmin, vmax = shared_range(before)
    im_b = overlay_activation(ax_i, crop, before, vmin, vmax)
    im_d = overlay_drop(ax_m, crop, drop)
    change = before - after
    im_c = overlay_change(ax_a, crop, change, change_limit(change))
    plain(ax_m, frame=method_color(method))
    key_top = top + PANEL + 0.12
    sheet.colorbar(im_b, LEFTS[0], key_top, "mean activation over channels")
    drop_key(sheet.fig, im_d, is_binary(drop), cax=sheet.axes(LEFTS[1] + 0.25, key_top, PANEL - 0.5, 0.16))
    sheet.colorbar(im_c, LEFTS[2], key_top, "before − after (red: lower after, blue: higher after)")


def _cam_row(sheet, top, crop, cam) -> None:
    """The CAM before | after (mean over the masks) | before − after; peaks marked."""
    masks = f" (mean of {cam.samples} masks)" if cam.samples > 1 else ""
    titles = (cam_title(cam, after=False), cam_title(cam, after=True), f"CAM before − after{masks}")
    ax_b, ax_a, ax_d = _panel_row(sheet, top, titles)
    im = overlay_cam(ax_b, crop, cam.before, mark=[cam.peak_before])
    overlay_cam(ax_a, crop, cam.after, mark=[cam.peak_after, cam.peak_before])
    change = cam.before.astype(np.float64) - cam.after
    im_c = overlay_change(ax_d, crop, change, change_limit(change))
    key_top = top + PANEL + 0.12
    for left in LEFTS[:2]:
        sheet.colorbar(im, left, key_top, "CAM, scaled to 0..1 (+ peak; ○ peak before)")
    sheet.colorbar(im_c, LEFTS[2], key_top, "before − after (red: lower after, blue: higher after)")


def _pair_scaled(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's before and after scaled to 0..1 by the range of the pair (one colour scale a pair)."""
    b, a = np.array(before, dtype=np.float64), np.array(after, dtype=np.float64)
    for j in range(len(b)):
        pair = np.concatenate([b[j].ravel(), a[j].ravel()])
        pair = pair[np.isfinite(pair)]
        lo, hi = (float(pair.min()), float(pair.max())) if pair.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        b[j], a[j] = (b[j] - lo) / (hi - lo), (a[j] - lo) / (hi - lo)
    return b, a


def _channel_rows(sheet, top, before, after, keep, title: str, channel_ids) -> None:
    """The k most active channels: before, their masks (when given) and after, each row one mosaic image."""
    import matplotlib

    k, h, w = before.shape
    b, a = _pair_scaled(before, after)
    cols = k * (w + 1) - 1
    row_h = CHANNEL_ROWS_W * h / cols
    cmap = matplotlib.colormaps[ACTIVATION_CMAP].with_extremes(bad="white")
    rows = [("before", b), ("mask", keep), ("after", a)] if keep is not None else [("before", b), ("after", a)]
    y = top + 0.55
    for label, maps in rows:
        ax = sheet.axes(0.55, y, CHANNEL_ROWS_W, row_h)
        if label == "mask":
            draw_mask_mosaic(ax, maps, k)
        else:
            ax.imshow(mosaic(maps, k), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        plain(ax)
        ax.set_ylabel(label, fontsize=TITLE_PT)
        y += row_h + 0.1
    for j in range(k):
        name = f"ch {channel_ids[j]}" if channel_ids is not None and j < len(channel_ids) else f"#{j + 1}"
        sheet.text(0.55 + CHANNEL_ROWS_W * (j * (w + 1) + w / 2) / cols, top + 0.5, name, ha="center", va="bottom",
                   fontsize=SMALL_PT + 0.5)
    sheet.text(0.55 + CHANNEL_ROWS_W / 2, top + 0.1, title, ha="center", va="top", fontsize=TITLE_PT + 0.5)
    note = "each column: one channel, before and after on one colour scale"
    if keep is not None:
        note += "; mask: dropped units in orange"
    sheet.text(0.55 + CHANNEL_ROWS_W / 2, y + 0.1, note, ha="center", va="top", fontsize=SMALL_PT)


def _draw_feature_show(
    crop: np.ndarray, act_before: np.ndarray, act_after: np.ndarray, drop_fraction: np.ndarray, *,
    top_channels_before: np.ndarray, top_channels_after: np.ndarray,
    preds_before: Sequence[tuple[str, float]], preds_after: Sequence[tuple[str, float]],
    titles: Mapping[str, str], suptitle: str | None = None, channel_ids: Sequence[int] | None = None,
    method: str = "dropblock", channel_keep: np.ndarray | None = None, cam=None,
) -> Figure:
    """What dropping does inside a CNN: maps over the input crop, top channels, predictions.

    crop: (S, S, 3) uint8, the network's input (S = 224 typically). act_before/act_after: (h, w)
    channel-mean activations: the before panel overlays act_before, the change panel draws
    act_before − act_after per cell on a symmetric diverging scale. drop_fraction: (h, w) in [0, 1],
    the fraction of channels dropped per feature cell. top_channels_before/after: (k, h, w), k <= 8,
    the most active channels (each pair on one colour scale); channel_keep: (k, h, w) bool, their
    masks (True kept), drawn between them. preds_*: top-5 (label, probability). titles keys: "image",
    "mask", "after", "channels", "before_preds", "after_preds". channel_ids: the channels' numbers.
    cam: a :class:`~dropblock.cam.CamResult` for a second row (before, after, before − after).
    """
    crop = check_image(crop)
    before = check_map(act_before, "act_before")
    after = check_map(act_after, "act_after", before.shape)
    drop = check_map(drop_fraction, "drop_fraction", before.shape)
    channels_before = np.asarray(top_channels_before, dtype=np.float64)
    channels_after = np.asarray(top_channels_after, dtype=np.float64)
    if channels_before.ndim != 3 or channels_before.shape != channels_after.shape:
        raise ValueError("top_channels_before/after must both be (k, h, w), "
                         f"got {channels_before.shape} and {channels_after.shape}")
    keep = None if channel_keep is None else np.asarray(channel_keep, dtype=bool)
    if keep is not None and keep.shape != channels_before.shape:
        raise ValueError(f"channel_keep must be {channels_before.shape} like the channels, got {keep.shape}")
    k = min(channels_before.shape[0], 8)
    keys = ("image", "mask", "after", "channels", "before_preds", "after_preds")
    text = {key: titles.get(key, key.replace("_", " ")) for key in keys}
    channels_top = 5.85 + (5.05 if cam is not None else 0.0)
    h, w = before.shape
    rows_h = (2 + (keep is not None)) * (CHANNEL_ROWS_W * h / max(k * (w + 1) - 1, 1) + 0.1) if k else 0.0
    sheet = _Sheet(channels_top + max(0.55 + rows_h + 0.4, 4.3))
    if suptitle:
        sheet.text(WIDTH / 2, 0.12, suptitle, ha="center", va="top", fontsize=SUPTITLE_PT + 1)
    _activation_row(sheet, 1.05, crop, before, after, drop, text, method)
    if cam is not None:
        _cam_row(sheet, 6.1, crop, cam)
    if k:
        _channel_rows(sheet, channels_top, channels_before[:k], channels_after[:k],
                      None if keep is None else keep[:k], text["channels"], channel_ids)
    pred_bars(sheet.axes(10.25, channels_top + 0.45, 2.45, 1.35), preds_before, "0.55", text["before_preds"])
    pred_bars(sheet.axes(10.25, channels_top + 2.6, 2.45, 1.35), preds_after, method_color(method),
              text["after_preds"])
    return sheet.fig


def _params(effect) -> str:
    return describe(effect.method, effect.params, effect.gamma, unit="cells")


def _show_titles(effect, image_name: str) -> dict[str, str]:
    """The panel titles of :func:`feature_show_figure`: the mask, change and channel panels show mask 1 of
    N, and say so with the mean over the N masks beside it."""
    c, h, w = effect.feature_shape
    label, first, stats = METHOD_LABELS[effect.method], effect.first, effect.stats
    n = stats.samples
    mask, dropped, kl = "mask", f"dropped {100 * first.drop_rate:.1f}%", f"KL {first.kl:.3g} nats"
    if n > 1:
        mask = f"mask 1 of {n}"
        dropped += f" (mean of {n}: {100 * stats.drop_rate.mean:.1f}%)"
        kl += f"\n(mask 1 of {n}; mean of {n}: {stats.kl.mean:.3g})"
    return {
        "image": f"{image_name}: mean activation of {effect.layer} ({c}x{h}x{w})",
        "mask": f"{label} {mask}: {_params(effect)}; {dropped}, target {100 * effect.p:g}%",
        "after": f"what {label if n == 1 else mask} changed: mean before − after",
        "channels": f"most active channels: before, {mask}, after",
        "before_preds": "top-5 before",
        "after_preds": f"top-5 after, {kl}",
    }


def feature_show_figure(effect, image_name: str, cam=None) -> Figure:
    """The ``show --layer`` figure of one :class:`~dropblock.effect.LayerEffect` (and its CAM, a mean over
    the N masks): overlays, the top channels with their masks, top-5 before and after. Every panel after
    the mask shows mask 1 of N (``effect.first``); with N > 1 its title says so and gives the mean of N."""
    first = effect.first
    return _draw_feature_show(
        effect.crop, effect.act_before, first.act_after, first.drop_fraction,
        top_channels_before=effect.channels_before, top_channels_after=first.channels_after,
        preds_before=[(pred.label, pred.prob) for pred in effect.predictions_before],
        preds_after=[(pred.label, pred.prob) for pred in first.predictions_after],
        titles=_show_titles(effect, image_name), channel_ids=[int(i) for i in effect.top_channels],
        method=effect.method, suptitle=f"{effect.model}, layer {effect.layer}", channel_keep=effect.channel_keep,
        cam=cam,
    )
