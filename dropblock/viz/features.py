"""Feature-map figures of ``show --layer`` and ``compare --layer``: a regularizer on a CNN's feature maps.

Activations are (h, w) maps drawn over the network's (S, S, 3) uint8 input crop; drop maps give the
fraction of channels dropped at each feature cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from dropblock.viz.labels import METHOD_LABELS, describe
from dropblock.viz.style import (
    ACTIVATION_CMAP, COLORS, DIM, DROPPED_ALPHA, SMALL_PT, SUPTITLE_PT, TITLE_PT, check_image, check_map,
    method_color, new_figure, plain, title_lines, wrap,
)


@dataclass
class FeatureColumn:
    """One method in :func:`figure_feature_compare`.

    drop_fraction: (h, w) float in [0, 1], fraction of channels dropped per feature cell.
    act_after: (h, w) float, channel-mean activation after dropping.
    top1_label/top1_prob: the network's top-1 class after dropping, probability in [0, 1].
    """

    method: str
    drop_fraction: np.ndarray
    act_after: np.ndarray
    top1_label: str
    top1_prob: float
    title: str


def _overlay_activation(ax, crop: np.ndarray, act: np.ndarray, vmin: float, vmax: float):
    """The crop with an (h, w) activation bilinearly upsampled over it at alpha 0.5."""
    H, W = crop.shape[:2]
    ax.imshow(crop, interpolation="nearest", aspect="equal")
    im = ax.imshow(
        act, cmap=ACTIVATION_CMAP, vmin=vmin, vmax=vmax, alpha=0.5, interpolation="bilinear",
        extent=(-0.5, W - 0.5, H - 0.5, -0.5), aspect="equal",
    )
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    return im


def _dropped_cmap() -> LinearSegmentedColormap:
    """Transparent at 0 to COLORS['dropped'] at 1, opacity growing as sqrt(fraction).

    With a linear ramp a per-channel mask (about p of the channels dropped at every cell,
    e.g. 10%) is all but invisible; the square root makes 10% a clear tint (alpha 0.27)
    while 100% stays the full fill. The colourbar shows the same mapping.
    """
    r, g, b = to_rgb(COLORS["dropped"])
    xs = np.linspace(0.0, 1.0, 256)
    return LinearSegmentedColormap.from_list(
        "dropped_fraction", [(x, (r, g, b, DROPPED_ALPHA * np.sqrt(x))) for x in xs]
    )


def _overlay_drop(ax, crop: np.ndarray, drop_fraction: np.ndarray):
    """The dimmed crop with the (h, w) dropped fraction drawn per feature cell (nearest)."""
    H, W = crop.shape[:2]
    h, w = drop_fraction.shape
    ax.imshow(np.rint(crop * DIM).astype(np.uint8), interpolation="nearest", aspect="equal")
    im = ax.imshow(
        np.clip(drop_fraction, 0, 1), cmap=_dropped_cmap(), vmin=0.0, vmax=1.0,
        interpolation="nearest", extent=(-0.5, W - 0.5, H - 0.5, -0.5), aspect="equal",
    )
    if max(h, w) <= 32:  # feature-cell grid
        for r in range(1, h):
            ax.axhline(r * H / h - 0.5, color="white", lw=0.3, alpha=0.35)
        for c in range(1, w):
            ax.axvline(c * W / w - 0.5, color="white", lw=0.3, alpha=0.35)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    return im


def _is_binary(a: np.ndarray) -> bool:
    return bool(np.all((a == 0) | (a == 1)))


def _drop_key(fig, ax_or_axes, mappable, binary: bool, location: str = "bottom", *, cax=None) -> None:
    """Colourbar for the drop map: 0..100 % of channels, or kept/dropped when it is binary.

    ``ax_or_axes``: the axes to steal room from (constrained layout); or pass a ready ``cax``
    for a horizontal colourbar there (fixed layout).
    """
    # no ``shrink``: a shrunk colourbar makes the constrained layout need several passes
    # to converge, and the first pass (the one savefig does) lets the suptitle cover titles
    if cax is not None:
        cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    else:
        cb = fig.colorbar(mappable, ax=ax_or_axes, location=location, aspect=30, pad=0.02)
    cb.ax.tick_params(labelsize=SMALL_PT)
    if binary:
        cb.set_ticks([0.0, 1.0], labels=["kept", "dropped"])
        cb.set_label("one mask shared by all channels", fontsize=SMALL_PT)
    else:
        fmt = PercentFormatter(xmax=1.0)
        (cb.ax.xaxis if location in ("bottom", "top") else cb.ax.yaxis).set_major_formatter(fmt)
        cb.set_label("fraction of channels dropped", fontsize=SMALL_PT)


def _channel_mosaics(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two (h, k * (w + 1) - 1) rows of k channels side by side, NaN between them; each channel is
    scaled to 0..1 by the range of its before/after pair, so a pair shares one colour scale."""
    k, h, w = before.shape
    rows = np.full((2, h, k * (w + 1) - 1), np.nan)
    for j in range(k):
        pair = np.concatenate([before[j].ravel(), after[j].ravel()])
        pair = pair[np.isfinite(pair)]
        lo, hi = (float(pair.min()), float(pair.max())) if pair.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1.0
        cols = slice(j * (w + 1), j * (w + 1) + w)
        rows[0][:, cols] = (before[j] - lo) / (hi - lo)
        rows[1][:, cols] = (after[j] - lo) / (hi - lo)
    return rows[0], rows[1]


def _shorten(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _pred_bars(ax, preds: Sequence[tuple[str, float]], color: str, title: str) -> None:
    """Horizontal bars of top-k (label, probability), the top-1 at the top, % as text."""
    preds = list(preds)[:5]
    labels = [_shorten(str(lbl)) for lbl, _ in preds]
    probs = [float(prob) for _, prob in preds]
    y = np.arange(len(preds))[::-1]
    ax.barh(y, probs, color=color, height=0.7)
    for yi, prob in zip(y, probs):
        inside = prob > 0.75
        ax.text(
            prob - 0.02 if inside else prob + 0.015, yi, f"{prob:.1%}", va="center",
            ha="right" if inside else "left", fontsize=SMALL_PT,
            color="white" if inside else "black",
        )
    ax.set_yticks(y, labels, fontsize=SMALL_PT + 0.5)
    ax.set_xlim(0, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.tick_params(axis="x", labelsize=SMALL_PT)
    ax.set_title(title, fontsize=TITLE_PT)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _shared_range(*maps: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) over the finite values of ``maps``; (0, 1) when none, never an empty range."""
    finite = np.concatenate([m[np.isfinite(m)] for m in maps])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return vmin, (vmax if vmax > vmin else vmin + 1.0)


def _activation_row(fig, crop, before, after, drop, titles, method: str) -> None:
    """Top row of the show figure: activation before | dropped fraction | activation after, with keys."""
    lefts = (0.035, 0.3525, 0.67)
    ax_i, ax_m, ax_a = (fig.add_axes((x, 0.49, 0.295, 0.40)) for x in lefts)
    vmin, vmax = _shared_range(before, after)
    im_b = _overlay_activation(ax_i, crop, before, vmin, vmax)
    im_d = _overlay_drop(ax_m, crop, drop)
    _overlay_activation(ax_a, crop, after, vmin, vmax)
    for ax, key in ((ax_i, "image"), (ax_m, "mask"), (ax_a, "after")):
        ax.set_title(wrap(titles[key], 3.9), fontsize=TITLE_PT)
        plain(ax)
    plain(ax_m, frame=method_color(method))
    for x in (lefts[0], lefts[2]):
        cb = fig.colorbar(im_b, cax=fig.add_axes((x + 0.02, 0.455, 0.255, 0.014)), orientation="horizontal")
        cb.set_label("mean activation over channels (shared scale)", fontsize=SMALL_PT)
        cb.ax.tick_params(labelsize=SMALL_PT)
    _drop_key(fig, ax_m, im_d, _is_binary(drop), cax=fig.add_axes((lefts[1] + 0.02, 0.455, 0.255, 0.014)))


def _channel_rows(fig, before: np.ndarray, after: np.ndarray, title: str, channel_ids) -> None:
    """Bottom left: the k most active channels, before (upper row) and after (lower row), each row one
    mosaic image (one axes per row draws far faster than one per channel)."""
    k, h, w = before.shape
    rows = _channel_mosaics(before, after)
    width = min(0.53, 0.066 * k)
    height = width * 13.0 / 9.6 * h / rows[0].shape[1]
    x0 = 0.06 + (0.53 - width) / 2
    cmap = matplotlib.colormaps[ACTIVATION_CMAP].with_extremes(bad="white")
    for r, (mosaic, label) in enumerate(zip(rows, ("before", "after"))):
        ax = fig.add_axes((x0, 0.25 - r * (height + 0.035), width, height))
        ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
        plain(ax)
        ax.set_ylabel(label, fontsize=TITLE_PT)
    for j in range(k):
        name = f"ch {channel_ids[j]}" if channel_ids is not None and j < len(channel_ids) else f"#{j + 1}"
        fig.text(x0 + width * (j * (w + 1) + w / 2) / rows[0].shape[1], 0.25 + height + 0.008, name,
                 ha="center", va="bottom", fontsize=SMALL_PT + 0.5)
    fig.text(0.325, 0.375, title, ha="center", fontsize=TITLE_PT + 0.5)
    fig.text(0.325, 0.07, "each column: one channel, before and after on one colour scale",
             ha="center", fontsize=SMALL_PT)


def figure_feature_show(
    crop: np.ndarray,
    act_before: np.ndarray,
    act_after: np.ndarray,
    drop_fraction: np.ndarray,
    *,
    top_channels_before: np.ndarray,
    top_channels_after: np.ndarray,
    preds_before: Sequence[tuple[str, float]],
    preds_after: Sequence[tuple[str, float]],
    titles: Mapping[str, str],
    suptitle: str | None = None,
    channel_ids: Sequence[int] | None = None,
    method: str = "dropblock",
) -> Figure:
    """What dropping does inside a CNN: maps over the input crop, top channels, predictions.

    crop: (S, S, 3) uint8, the network's input (S = 224 typically). act_before/act_after:
    (h, w) channel-mean activations, bilinearly upsampled over the crop at alpha 0.5 on one
    shared colour scale. drop_fraction: (h, w) in [0, 1], the fraction of channels dropped
    per feature cell, drawn per cell (nearest). top_channels_before/after: (k, h, w), k <= 8,
    the most active channels; each before/after pair shares a colour scale. preds_*: top-5
    (label, probability). titles keys: "image", "mask", "after", "channels",
    "before_preds", "after_preds". channel_ids: optional channel numbers for the grid.
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
    k = min(channels_before.shape[0], 8)
    keys = ("image", "mask", "after", "channels", "before_preds", "after_preds")
    text = {key: titles.get(key, key.replace("_", " ")) for key in keys}
    # A fixed layout (figure fractions of 13 x 9.6 in): the constrained layout engine took about
    # half of this figure's drawing time, which `show --layer` pays on every call.
    fig = Figure(figsize=(13.0, 9.6), dpi=100)
    FigureCanvasAgg(fig)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_PT + 1, y=0.99, va="top")
    _activation_row(fig, crop, before, after, drop, text, method)
    if k:
        _channel_rows(fig, channels_before[:k], channels_after[:k], text["channels"], channel_ids)
    _pred_bars(fig.add_axes((0.795, 0.255, 0.18, 0.135)), preds_before, "0.55", text["before_preds"])
    _pred_bars(fig.add_axes((0.795, 0.055, 0.18, 0.135)), preds_after, method_color(method), text["after_preds"])
    return fig


def figure_feature_compare(
    crop: np.ndarray, columns: Sequence[FeatureColumn], *, suptitle: str | None = None
) -> Figure:
    """One column per method: dropped fraction over the crop, activation after, top-1 after.

    crop: (S, S, 3) uint8. Each column's drop_fraction and act_after are (h, w); activations
    share one colour scale across columns so they can be compared; top1_prob in [0, 1].
    """
    crop = check_image(crop)
    if not columns:
        raise ValueError("figure_feature_compare needs at least one column")
    drops = [check_map(c.drop_fraction, f"drop_fraction of {c.method!r}") for c in columns]
    acts = [check_map(c.act_after, f"act_after of {c.method!r}", d.shape) for c, d in zip(columns, drops)]
    vmin, vmax = _shared_range(*acts)
    pw = 3.0
    titles = [wrap(c.title, pw) for c in columns]
    n = len(columns)
    fig = new_figure((n * pw + 1.2, 2 * pw + 1.3 + 0.2 * title_lines(*titles) + (0.4 if suptitle else 0)))
    grid = fig.add_gridspec(3, n, height_ratios=[pw, pw, 0.42])
    masks_axes, act_axes = [], []
    for j, (col, drop, act) in enumerate(zip(columns, drops, acts)):
        masks_axes.append(fig.add_subplot(grid[0, j]))
        im_d = _overlay_drop(masks_axes[-1], crop, drop)
        masks_axes[-1].set_title(titles[j], fontsize=TITLE_PT)
        plain(masks_axes[-1], frame=method_color(col.method), lw=2.5)
        act_axes.append(fig.add_subplot(grid[1, j]))
        im_a = _overlay_activation(act_axes[-1], crop, act, vmin, vmax)
        plain(act_axes[-1])
        _top1_bar(fig.add_subplot(grid[2, j]), col)
    act_axes[0].set_ylabel("activation after", fontsize=SMALL_PT + 0.5)
    masks_axes[0].set_ylabel("dropped", fontsize=SMALL_PT + 0.5)
    _drop_key(fig, masks_axes, im_d, all(_is_binary(d) for d in drops), location="right")
    cb = fig.colorbar(im_a, ax=act_axes, location="right", aspect=20, pad=0.01)
    cb.set_label("mean activation (shared scale)", fontsize=SMALL_PT)
    cb.ax.tick_params(labelsize=SMALL_PT)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_PT)
    return fig


def _top1_bar(ax, col: FeatureColumn) -> None:
    """A bar of the top-1 probability after, on a light full-width track."""
    prob = float(col.top1_prob)
    ax.barh([0], [prob], color=method_color(col.method), height=0.55)
    ax.barh([0], [1.0], color="0.92", height=0.55, zorder=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, 0.5)
    ax.set_title(f"top-1 after: {_shorten(col.top1_label, 24)}  {prob:.1%}", fontsize=SMALL_PT + 0.5, loc="left")
    plain(ax)


def _params(effect) -> str:
    return describe(effect.method, effect.params, effect.gamma, unit="cells")


def feature_show_figure(effect, image_name: str) -> Figure:
    """:func:`figure_feature_show` of one :class:`~dropblock.effect.LayerEffect`: overlays, top
    channels, top-5 before and after."""
    c, h, w = effect.feature_shape
    label = METHOD_LABELS[effect.method]
    titles = {
        "image": f"{image_name}: mean activation of {effect.layer} ({c}x{h}x{w})",
        "mask": f"{label} mask: {_params(effect)}; dropped {100 * effect.realized_drop_rate:.1f}% "
                f"(target {100 * effect.p:g}%)",
        "after": f"mean activation after {label}",
        "channels": "most active channels: before (top), after (bottom)",
        "before_preds": "top-5 before",
        "after_preds": f"top-5 after (KL {effect.kl_divergence:.3g} nats)",
    }
    return figure_feature_show(
        effect.crop, effect.act_before, effect.act_after, effect.drop_fraction,
        top_channels_before=effect.channels_before, top_channels_after=effect.channels_after,
        preds_before=[(pred.label, pred.prob) for pred in effect.predictions_before],
        preds_after=[(pred.label, pred.prob) for pred in effect.predictions_after],
        titles=titles, channel_ids=[int(i) for i in effect.top_channels], method=effect.method,
        suptitle=f"{effect.model}, layer {effect.layer}",
    )


def feature_compare_figure(effects: list, image_name: str) -> Figure:
    """:func:`figure_feature_compare`: one column per method at the same target drop rate."""
    cols = []
    for effect in effects:
        top = effect.predictions_after[0]
        cols.append(FeatureColumn(
            method=effect.method, drop_fraction=effect.drop_fraction, act_after=effect.act_after,
            top1_label=top.label, top1_prob=top.prob,
            title=f"{METHOD_LABELS[effect.method]}: {_params(effect)}\n"
                  f"dropped {100 * effect.realized_drop_rate:.1f}%, KL {effect.kl_divergence:.3g}",
        ))
    first = effects[0]
    c, h, w = first.feature_shape
    before = first.predictions_before[0]
    return figure_feature_compare(
        first.crop, cols,
        suptitle=f"{image_name} on {first.model} {first.layer} ({c}x{h}x{w}), target drop rate {100 * first.p:g}%; "
                 f"before: {before.label} {100 * before.prob:.1f}%",
    )
