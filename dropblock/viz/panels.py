"""Panels of the feature-map figures (``show --layer``, ``compare --layer``): maps drawn over the network's
(S, S, 3) uint8 input crop, channel mosaics, class activation maps and prediction bars.

Maps are (h, w) arrays in feature-map cells; a panel stretches them over the crop (activations and
CAMs bilinearly, masks and changes per cell). Channel mosaics put k (h, w) maps in a grid of tiles
with one blank cell between them.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import LinearSegmentedColormap, ListedColormap, to_rgb
from matplotlib.ticker import PercentFormatter

from dropblock.viz.style import ACTIVATION_CMAP, COLORS, DIM, DROPPED_ALPHA, SMALL_PT, TITLE_PT

CHANGE_CMAP = "RdBu_r"
"""Diverging colormap of before − after: red where the value is lower after, blue where it is higher."""
CAM_CMAP = "viridis"
"""Class activation maps: perceptually uniform and colour-blind safe, and unlike the activations' inferno."""
CAM_LABELS = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "smoothgradcampp": "Smooth Grad-CAM++",
              "xgradcam": "XGrad-CAM", "layercam": "Layer-CAM", "cam": "CAM", "scorecam": "Score-CAM",
              "sscam": "SS-CAM", "iscam": "IS-CAM"}
KEPT_GREY = 0.9


def _extent(crop: np.ndarray) -> tuple[float, float, float, float]:
    H, W = crop.shape[:2]
    return (-0.5, W - 0.5, H - 0.5, -0.5)


def _frame(ax, crop: np.ndarray) -> None:
    H, W = crop.shape[:2]
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)


def overlay_activation(ax, crop: np.ndarray, act: np.ndarray, vmin: float, vmax: float):
    """The crop with an (h, w) activation bilinearly upsampled over it at alpha 0.5."""
    ax.imshow(crop, interpolation="nearest", aspect="equal")
    im = ax.imshow(act, cmap=ACTIVATION_CMAP, vmin=vmin, vmax=vmax, alpha=0.5, interpolation="bilinear",
                   extent=_extent(crop), aspect="equal")
    _frame(ax, crop)
    return im


def dropped_cmap() -> LinearSegmentedColormap:
    """Transparent at 0 to COLORS['dropped'] at 1, opacity growing as sqrt(fraction): with a linear ramp
    a per-channel mask (about p of the channels dropped at every cell) is all but invisible."""
    r, g, b = to_rgb(COLORS["dropped"])
    xs = np.linspace(0.0, 1.0, 256)
    return LinearSegmentedColormap.from_list("dropped_fraction", [(x, (r, g, b, DROPPED_ALPHA * np.sqrt(x))) for x in xs])


def _cell_grid(ax, crop: np.ndarray, h: int, w: int, color: str = "white") -> None:
    H, W = crop.shape[:2]
    if max(h, w) <= 32:
        for r in range(1, h):
            ax.axhline(r * H / h - 0.5, color=color, lw=0.3, alpha=0.35)
        for c in range(1, w):
            ax.axvline(c * W / w - 0.5, color=color, lw=0.3, alpha=0.35)


def overlay_drop(ax, crop: np.ndarray, drop_fraction: np.ndarray):
    """The dimmed crop with the (h, w) dropped fraction drawn per feature cell (nearest)."""
    ax.imshow(np.rint(crop * DIM).astype(np.uint8), interpolation="nearest", aspect="equal")
    im = ax.imshow(np.clip(drop_fraction, 0, 1), cmap=dropped_cmap(), vmin=0.0, vmax=1.0, interpolation="nearest",
                   extent=_extent(crop), aspect="equal")
    _cell_grid(ax, crop, *drop_fraction.shape)
    _frame(ax, crop)
    return im


def overlay_change(ax, crop: np.ndarray, change: np.ndarray, vmax: float):
    """A grey, faded crop under the (h, w) change before − after, per cell, on a symmetric diverging
    scale [-vmax, vmax]: red where the value is lower after, blue where higher, clear where unchanged."""
    grey = crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    faded = np.clip(255 - (255 - grey) * 0.45, 0, 255).astype(np.uint8)
    ax.imshow(np.repeat(faded[:, :, None], 3, axis=2), interpolation="nearest", aspect="equal")
    cmap = matplotlib.colormaps[CHANGE_CMAP]
    colors = cmap(np.linspace(0, 1, 256))
    colors[:, 3] = np.clip(np.abs(np.linspace(-1, 1, 256)) * 1.6, 0, 0.9)  # clear at 0, opaque at the ends
    im = ax.imshow(change, cmap=ListedColormap(colors), vmin=-vmax, vmax=vmax, interpolation="nearest",
                   extent=_extent(crop), aspect="equal")
    _cell_grid(ax, crop, *change.shape, color="0.6")
    _frame(ax, crop)
    return im


def change_limit(*changes: np.ndarray) -> float:
    """A symmetric colour limit for before − after maps: their largest |value| (1 when all are 0)."""
    finite = np.concatenate([np.abs(c[np.isfinite(c)]) for c in changes])
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def overlay_cam(ax, crop: np.ndarray, cam: np.ndarray, mark: Sequence[tuple[int, int]] = ()):
    """The crop with an (h, w) CAM in [0, 1] bilinearly upsampled over it at alpha 0.5; ``mark``: peaks
    (row, col) in CAM cells, the first as a white cross, the next as a hollow circle."""
    ax.imshow(crop, interpolation="nearest", aspect="equal")
    im = ax.imshow(cam, cmap=CAM_CMAP, vmin=0.0, vmax=1.0, alpha=0.5, interpolation="bilinear",
                   extent=_extent(crop), aspect="equal")
    H, W = crop.shape[:2]
    h, w = cam.shape
    for i, (row, col) in enumerate(mark):
        y, x = (row + 0.5) * H / h - 0.5, (col + 0.5) * W / w - 0.5
        if i == 0:
            ax.plot([x], [y], marker="+", ms=13, mew=4, color="black", zorder=4)
            ax.plot([x], [y], marker="+", ms=11, mew=2, color="white", zorder=5)
        else:
            ax.plot([x], [y], marker="o", ms=12, mfc="none", mew=1.6, mec="white", zorder=4)
    _frame(ax, crop)
    return im


def mosaic(maps: np.ndarray, cols: int, fill: float = np.nan) -> np.ndarray:
    """k (h, w) maps as a grid of ``cols`` tiles per row, ``fill`` between tiles and after the last:
    (rows * (h + 1) - 1, cols * (w + 1) - 1)."""
    k, h, w = maps.shape
    rows = -(-k // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), fill, dtype=np.float64)
    for j in range(k):
        r, c = divmod(j, cols)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = maps[j]
    return out


def scaled_each(maps: np.ndarray) -> np.ndarray:
    """Each (h, w) map of (k, h, w) scaled to 0..1 by its own finite range (constant maps to 0)."""
    out = np.zeros(maps.shape, dtype=np.float64)
    for j, m in enumerate(np.asarray(maps, dtype=np.float64)):
        finite = m[np.isfinite(m)]
        if finite.size and finite.max() > finite.min():
            out[j] = (m - finite.min()) / (finite.max() - finite.min())
    return out


def draw_activation_mosaic(ax, maps: np.ndarray, cols: int):
    """k channels' activations, each on its own 0..1 scale, as one image (white between tiles)."""
    cmap = matplotlib.colormaps[ACTIVATION_CMAP].with_extremes(bad="white")
    return ax.imshow(mosaic(scaled_each(maps), cols), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest",
                     aspect="equal")


def keep_cmap() -> ListedColormap:
    """0 kept (light grey), 1 dropped (COLORS['dropped']); NaN (between tiles) white."""
    return ListedColormap([(KEPT_GREY,) * 3, to_rgb(COLORS["dropped"])]).with_extremes(bad="white")


def draw_mask_mosaic(ax, keep: np.ndarray, cols: int):
    """k channels' masks (k, h, w) bool, True kept: kept light grey, dropped in COLORS['dropped']."""
    dropped = (~np.asarray(keep, dtype=bool)).astype(np.float64)
    return ax.imshow(mosaic(dropped, cols), cmap=keep_cmap(), vmin=0.0, vmax=1.0, interpolation="nearest",
                     aspect="equal")


def is_binary(a: np.ndarray) -> bool:
    return bool(np.all((a == 0) | (a == 1)))


def drop_key(fig, mappable, binary: bool, *, ax=None, cax=None, location: str = "right") -> None:
    """Colourbar for the dropped fraction: 0..100 % of channels, or kept/dropped when it is binary.
    ``ax``: the axes to steal room from (constrained layout); or a ready horizontal ``cax``."""
    if cax is not None:
        cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    else:
        cb = fig.colorbar(mappable, ax=ax, location=location, aspect=30, pad=0.02)
    cb.ax.tick_params(labelsize=SMALL_PT)
    if binary:
        cb.set_ticks([0.0, 1.0], labels=["kept", "dropped"])
        cb.set_label("one mask shared by all channels", fontsize=SMALL_PT)
    else:
        horizontal = cax is not None or location in ("bottom", "top")
        (cb.ax.xaxis if horizontal else cb.ax.yaxis).set_major_formatter(PercentFormatter(xmax=1.0))
        cb.set_label("fraction of channels dropped", fontsize=SMALL_PT)


def shorten(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def pred_bars(ax, preds: Sequence[tuple[str, float]], color: str, title: str) -> None:
    """Horizontal bars of top-k (label, probability), the top-1 at the top, % as text."""
    preds = list(preds)[:5]
    probs = [float(prob) for _, prob in preds]
    y = np.arange(len(preds))[::-1]
    ax.barh(y, probs, color=color, height=0.7)
    for yi, prob in zip(y, probs):
        inside = prob > 0.75
        ax.text(prob - 0.02 if inside else prob + 0.015, yi, f"{prob:.1%}", va="center",
                ha="right" if inside else "left", fontsize=SMALL_PT, color="white" if inside else "black")
    ax.set_yticks(y, [shorten(str(lbl)) for lbl, _ in preds], fontsize=SMALL_PT + 0.5)
    ax.set_xlim(0, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.tick_params(axis="x", labelsize=SMALL_PT)
    ax.set_title(title, fontsize=TITLE_PT)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def shared_range(*maps: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) over the finite values of ``maps``; (0, 1) when none, never an empty range."""
    finite = np.concatenate([m[np.isfinite(m)] for m in maps])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return vmin, (vmax if vmax > vmin else vmin + 1.0)


def cam_title(cam, after: bool) -> str:
    """'Grad-CAM at head for tiger cat, before' or 'Grad-CAM after (mean of 8 masks)' and a second line:
    the correlation with before and the peak before → after, (row, col) in CAM cells."""
    name = CAM_LABELS.get(cam.method, cam.method)
    if not after:
        return f"{name} at {cam.layer} for {shorten(cam.class_label, 22)}, before"
    r = "—" if cam.correlation is None else f"{cam.correlation:.2f}"
    masks = f"mean of {cam.samples} masks" if cam.samples > 1 else "one mask"
    return f"{name} after ({masks})\nr = {r} with before; peak {tuple(cam.peak_before)} → {tuple(cam.peak_after)}"
