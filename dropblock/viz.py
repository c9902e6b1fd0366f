"""Figures: what a keep mask does to an image, keep_prob schedules, gamma sweeps, feature maps.

Matplotlib is used only through its object API (``Figure`` with an Agg canvas, never
pyplot), so nothing leaks between calls and no display is needed. Nothing here prints.

Conventions for every function:

* images are (H, W, 3) uint8 RGB; masks ``keep`` are (H, W) bool, True = kept;
* positions are (row, col) in pixels of the array shown (pixel centres at integers);
* rates and probabilities are fractions in [0, 1] (axes show them as percent);
* colours come from :data:`COLORS` (Okabe-Ito, colour-blind safe).
"""

from __future__ import annotations

import os
import secrets
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

__all__ = [
    "COLORS",
    "ACTIVATION_CMAP",
    "SAVE_FORMATS",
    "CompareColumn",
    "ScheduleSnapshot",
    "FeatureColumn",
    "save_figure",
    "figure_show",
    "figure_compare",
    "figure_schedule",
    "figure_gamma_sweep",
    "figure_feature_show",
    "figure_feature_compare",
]

#: One palette for every figure (Okabe & Ito 2008, colour-blind safe).
COLORS: dict[str, str] = {
    "dropblock": "#0072B2",  # blue
    "dropout": "#E69F00",  # orange
    "spatial_dropout": "#009E73",  # bluish green
    "cutout": "#CC79A7",  # reddish purple
    "dropped": "#D55E00",  # vermillion: dropped area overlay
    "seed": "#F0E442",  # yellow (black edge): DropBlock seed markers
    "target": "#000000",  # black dashed: target lines
}
_METHODS = ("dropblock", "dropout", "spatial_dropout", "cutout")
#: Further Okabe-Ito colours for series that are not methods, in order of use.
_EXTRA_COLORS = ("#56B4E9", "#D55E00", "#000000", "#F0E442")
#: Perceptually uniform colormap for activations.
ACTIVATION_CMAP = "inferno"
#: File extension -> matplotlib format for :func:`save_figure`.
SAVE_FORMATS: dict[str, str] = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

_TITLE_PT = 10.0  # panel titles
_SUPTITLE_PT = 12.0
_SMALL_PT = 8.5
_DIM = 0.45  # brightness of the image under a mask overlay
_DROPPED_ALPHA = 0.85  # opacity of the dropped-area fill
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


# --------------------------------------------------------------------------- data classes


@dataclass
class CompareColumn:
    """One method in :func:`figure_compare`.

    method: a key of COLORS ("dropblock", "dropout", "spatial_dropout", "cutout") or any name.
    keep: (H, W) bool, True = kept. seeds: (K, 2) float (row, col) pixel centres, or None.
    """

    method: str
    keep: np.ndarray
    seeds: np.ndarray | None
    mask_title: str
    masked_title: str


@dataclass
class ScheduleSnapshot:
    """The mask drawn at one training step: keep (H, W) bool at keep_prob (fraction)."""

    step: int
    keep_prob: float
    keep: np.ndarray


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


# --------------------------------------------------------------------------- saving


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: float = 150) -> Path:
    """Write ``fig`` to ``path`` atomically; the format comes from the extension.

    .png, .svg and .pdf are allowed (ValueError otherwise). ``dpi`` is dots per inch for
    raster output: a PNG is figsize * dpi pixels. The figure goes to a hidden temp file in
    the same directory, then ``os.replace`` puts it in place, so ``path`` is either the
    complete new file or untouched; on failure the temp file is removed and the error
    propagates. Returns ``path`` as a Path.
    """
    out = Path(path)
    fmt = SAVE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        allowed = ", ".join(SAVE_FORMATS)
        got = repr(out.suffix) if out.suffix else "no extension"
        raise ValueError(f"cannot save a figure as {got} ({str(out)!r}): use one of {allowed}")
    metadata = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
    created = False
    try:
        with open(tmp, "xb") as fh:
            created = True
            # zlib level 1: a PNG a fifth larger, written in a third less time (it dominates `show`)
            extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
            fig.savefig(fh, format=fmt, dpi=dpi, metadata=metadata, **extra)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        if created:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        raise
    return out


# --------------------------------------------------------------------------- helpers


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A fresh Figure with its own Agg canvas and constrained layout (no pyplot)."""
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.04, h_pad=0.04, wspace=0.03, hspace=0.03)
    return fig


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return image


def _check_keep(keep: np.ndarray, shape: tuple[int, int], what: str = "keep") -> np.ndarray:
    keep = np.asarray(keep)
    if keep.shape != tuple(shape):
        raise ValueError(f"{what} must be {tuple(shape)} like the image, got {keep.shape}")
    return keep.astype(bool, copy=False)


def _check_map(a: np.ndarray, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or (shape is not None and a.shape != tuple(shape)):
        want = f"{tuple(shape)}" if shape is not None else "(h, w)"
        raise ValueError(f"{what} must be {want}, got {a.shape}")
    return a


def _check_seeds(seeds: np.ndarray | None) -> np.ndarray | None:
    """(K, 2) float (row, col), or None."""
    if seeds is None:
        return None
    s = np.asarray(seeds, dtype=np.float64)
    if s.size == 0:
        return np.zeros((0, 2))
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"seeds must be (K, 2) (row, col) pixel centres, got {s.shape}")
    return s


def _method_color(method: str) -> str:
    return COLORS.get(method, "#555555")


def _wrap(title: str, width_in: float, pt: float = _TITLE_PT) -> str:
    """Wrap each line of ``title`` to about the width of ``width_in`` inches at ``pt`` points."""
    chars = max(12, int(width_in * 72.0 / (0.56 * pt)))
    return "\n".join(textwrap.fill(line, chars) if len(line) > chars else line for line in title.split("\n"))


def _plain(ax, *, frame: str | None = None, lw: float = 2.0) -> None:
    """No ticks; a coloured frame when ``frame`` is a colour, no frame when None."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        if frame is None:
            spine.set_visible(False)
        else:
            spine.set_visible(True)
            spine.set_edgecolor(frame)
            spine.set_linewidth(lw)


def _mask_overlay(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the image dimmed, dropped pixels filled with COLORS['dropped']."""
    base = image.astype(np.float32) * _DIM
    fill = np.array(to_rgb(COLORS["dropped"]), np.float32) * 255.0
    dropped = ~keep
    base[dropped] = base[dropped] * (1 - _DROPPED_ALPHA) + fill * _DROPPED_ALPHA
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


def _masked(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """image * keep: dropped pixels exactly black."""
    return image * keep[:, :, None].astype(np.uint8)


def _draw_seeds(ax, seeds: np.ndarray | None) -> None:
    """Small seed markers at (row, col); marker area shrinks when there are many."""
    if seeds is None or len(seeds) == 0:
        return
    size = 18.0 if len(seeds) <= 50 else (10.0 if len(seeds) <= 300 else 5.0)
    ax.scatter(
        seeds[:, 1], seeds[:, 0], s=size, marker="o", c=COLORS["seed"],
        edgecolors="black", linewidths=0.5, zorder=3,
    )


def _panel_size(h: int, w: int, *, width: float, max_height: float, min_width: float) -> tuple[float, float]:
    """(panel width, panel height) in inches for an h x w image."""
    aspect = h / w
    pw, ph = width, width * aspect
    if ph > max_height:
        ph = max_height
        pw = max(ph / aspect, min_width)
    return pw, ph


def _mask_legend_handles(with_seeds: bool) -> list:
    handles = [Patch(facecolor=COLORS["dropped"], alpha=_DROPPED_ALPHA, label="dropped")]
    if with_seeds:
        handles.append(
            Line2D([], [], ls="", marker="o", ms=5, mfc=COLORS["seed"], mec="black", mew=0.5,
                   label="DropBlock seed (block centre)")
        )
    return handles


def _title_lines(*titles: str | None) -> int:
    return max((t.count("\n") + 1 for t in titles if t), default=0)


# --------------------------------------------------------------------------- image figures


def _image_grid(
    fig_rows: Sequence[Sequence[str]], h: int, w: int, *, width: float, max_height: float,
    min_width: float, suptitle: str | None, legend: bool,
) -> tuple[Figure, list[list], float]:
    """A figure of image panels laid out by hand, so positions are exact after one draw.

    fig_rows: the (already wrapped) titles, one list per row, one title per column.
    Each axes box has exactly the image's aspect, centred in a slot at least ``min_width``
    inches wide, so titles fit and ``imshow`` never has to shrink the box. Room is left
    for a suptitle and, under the last row, a legend. Returns the figure, axes[row][col] and
    the legend row's centre height (figure fraction).
    """
    pw, ph = _panel_size(h, w, width=width, max_height=max_height, min_width=min_width)
    iw = min(pw, ph * w / h)  # the image's drawn width inside its slot
    n_cols = max(len(r) for r in fig_rows)
    gap, side, top, bottom = 0.18, 0.08, 0.08, 0.08
    line = _TITLE_PT * 1.25 / 72.0
    title_h = [(_title_lines(*row) * line + 0.1) if any(row) else 0.05 for row in fig_rows]
    sup_h = (_SUPTITLE_PT * 1.35 / 72.0 + 0.08) if suptitle else 0.0
    legend_h = 0.32 if legend else 0.0
    fw = 2 * side + n_cols * pw + (n_cols - 1) * gap
    fh = top + sup_h + sum(title_h) + len(fig_rows) * ph + (len(fig_rows) - 1) * 0.06 + legend_h + bottom
    fig = Figure(figsize=(fw, fh), dpi=100)
    FigureCanvasAgg(fig)
    axes: list[list] = []
    y = fh - top - sup_h
    for row, th in zip(fig_rows, title_h):
        y -= th + ph
        axes_row = []
        for j, title in enumerate(row):
            x = side + j * (pw + gap) + (pw - iw) / 2
            ax = fig.add_axes((x / fw, y / fh, iw / fw, ph / fh))
            ax.set_title(title, fontsize=_TITLE_PT, pad=4)
            axes_row.append(ax)
        axes.append(axes_row)
        y -= 0.06
    if suptitle:
        fig.suptitle(suptitle, fontsize=_SUPTITLE_PT, y=1 - top / fh, va="top")
    return fig, axes, (bottom + legend_h / 2) / fh


def figure_show(
    image: np.ndarray,
    keep: np.ndarray,
    *,
    seeds: np.ndarray | None = None,
    method: str = "dropblock",
    titles: tuple[str, str, str] = ("image", "mask", "masked"),
    suptitle: str | None = None,
) -> Figure:
    """Three panels: the image, the mask over the dimmed image, and image * keep.

    image: (H, W, 3) uint8. keep: (H, W) bool, True = kept. seeds: (K, 2) float
    (row, col) pixel centres of DropBlock blocks, drawn as small markers, or None.
    method picks the mask panel's frame colour from COLORS. Returns a Figure (no pyplot).
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    keep = _check_keep(keep, (h, w))
    seeds = _check_seeds(seeds)
    if len(titles) != 3:
        raise ValueError(f"titles must be 3 strings (image, mask, masked), got {len(titles)}")

    pw, _ = _panel_size(h, w, width=4.0, max_height=4.6, min_width=3.0)
    wrapped = [_wrap(t, pw) for t in titles]
    fig, grid, legend_y = _image_grid(
        [wrapped], h, w, width=4.0, max_height=4.6, min_width=3.0, suptitle=suptitle, legend=True
    )
    axes = grid[0]
    panels = (image, _mask_overlay(image, keep), _masked(image, keep))
    for ax, data in zip(axes, panels):
        ax.imshow(data, interpolation="nearest", aspect="equal")
    _plain(axes[0])
    _plain(axes[1], frame=_method_color(method))
    _plain(axes[2])
    _draw_seeds(axes[1], seeds)
    axes[1].set_xlim(-0.5, w - 0.5)
    axes[1].set_ylim(h - 0.5, -0.5)
    fig.legend(
        handles=_mask_legend_handles(seeds is not None and len(seeds) > 0),
        loc="center", bbox_to_anchor=(0.5, legend_y), ncol=2, frameon=False,
        fontsize=_SMALL_PT, handlelength=1.2, columnspacing=1.0,
    )
    return fig


def figure_compare(
    image: np.ndarray, columns: Sequence[CompareColumn], *, suptitle: str | None = None
) -> Figure:
    """A row of masks (over the dimmed image) and a row of masked images, one column per method.

    image: (H, W, 3) uint8; each column's keep is (H, W) bool (True = kept) and its seeds
    (K, 2) (row, col) pixels or None. Mask panels are framed in the method's colour.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    if not columns:
        raise ValueError("figure_compare needs at least one column")
    keeps = [_check_keep(c.keep, (h, w), f"keep of {c.method!r}") for c in columns]
    seeds = [_check_seeds(c.seeds) for c in columns]

    size = dict(width=3.3, max_height=3.6, min_width=2.6)
    pw, _ = _panel_size(h, w, **size)
    top = [_wrap(c.mask_title, pw) for c in columns]
    bottom = [_wrap(c.masked_title, pw) for c in columns]
    fig, (row_m, row_x), legend_y = _image_grid([top, bottom], h, w, suptitle=suptitle, legend=True, **size)
    any_seeds = False
    for col, keep, sd, ax_m, ax_x in zip(columns, keeps, seeds, row_m, row_x):
        ax_m.imshow(_mask_overlay(image, keep), interpolation="nearest", aspect="equal")
        _draw_seeds(ax_m, sd)
        ax_m.set_xlim(-0.5, w - 0.5)
        ax_m.set_ylim(h - 0.5, -0.5)
        _plain(ax_m, frame=_method_color(col.method), lw=2.5)
        ax_x.imshow(_masked(image, keep), interpolation="nearest", aspect="equal")
        _plain(ax_x)
        any_seeds = any_seeds or (sd is not None and len(sd) > 0)
    fig.legend(
        handles=_mask_legend_handles(any_seeds), loc="center",
        bbox_to_anchor=(0.5, legend_y), ncol=2, frameon=False, fontsize=_SMALL_PT,
    )
    return fig


# --------------------------------------------------------------------------- curves


def figure_schedule(
    steps: np.ndarray,
    keep_probs: np.ndarray,
    *,
    target: float,
    snapshots: Sequence[ScheduleSnapshot] | None = None,
    image: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """keep_prob (fraction) against training step, with the target keep_prob dashed.

    steps, keep_probs: (T,) arrays. snapshots: masks at some steps, marked on the curve
    with letters and shown in a row below as image * keep (or the bare mask, dropped in
    COLORS['dropped'], when image is None). image: (H, W, 3) uint8.
    """
    steps = np.asarray(steps, dtype=np.float64).ravel()
    keep_probs = np.asarray(keep_probs, dtype=np.float64).ravel()
    if steps.shape != keep_probs.shape:
        raise ValueError(f"steps and keep_probs differ in length: {steps.size} vs {keep_probs.size}")
    snaps = list(snapshots or [])
    if image is not None:
        image = _check_image(image)

    n = len(snaps)
    width = max(8.0, min(1.9 * n, 16.0))
    thumb = 0.0
    if n:
        h, w = snaps[0].keep.shape[:2] if image is None else image.shape[:2]
        tw = width / n - 0.2  # a thumbnail's width in inches
        thumb = min(tw * h / w, 2.6) + 0.5
    fig = _new_figure((width, 3.4 + thumb + (0.35 if title else 0.0)))
    if n:
        gs = fig.add_gridspec(2, n, height_ratios=[3.4, thumb])
        ax = fig.add_subplot(gs[0, :])
    else:
        ax = fig.add_subplot(1, 1, 1)

    ax.plot(steps, keep_probs, color=COLORS["dropblock"], lw=2.0, label="keep_prob", zorder=2)
    ax.axhline(target, color=COLORS["target"], ls="--", lw=1.2, label=f"target {target:.3g}", zorder=1)
    lo = float(np.nanmin(np.append(keep_probs, target))) if keep_probs.size else target
    hi = float(np.nanmax(np.append(keep_probs, [target, 1.0])))
    pad = max(0.02 * (hi - lo), 0.005)
    ax.set_ylim(lo - 4 * pad, hi + 4 * pad)
    if steps.size:
        span = float(steps.max() - steps.min()) or 1.0
        ax.set_xlim(steps.min() - 0.015 * span, steps.max() + 0.015 * span)
    ax.set_xlabel("training step", fontsize=_TITLE_PT)
    ax.set_ylabel("keep_prob", fontsize=_TITLE_PT)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)

    for i, s in enumerate(snaps):
        letter = _letter(i)
        ax.axvline(s.step, color="0.55", ls=":", lw=1.0, zorder=1)
        ax.plot([s.step], [s.keep_prob], "o", ms=6, mfc=COLORS["dropblock"], mec="black", mew=0.6, zorder=3)
        right = steps.size > 0 and s.step > steps.min() + 0.93 * (steps.max() - steps.min())
        ax.annotate(  # left of the point near the right edge, so the letter stays inside
            letter, (s.step, s.keep_prob), xytext=(-4 if right else 4, 5), textcoords="offset points",
            ha="right" if right else "left", fontsize=_SMALL_PT + 0.5, fontweight="bold",
        )
        tax = fig.add_subplot(gs[1, i])
        keep = _check_keep(s.keep, (image.shape[:2] if image is not None else s.keep.shape))
        if image is not None:
            tax.imshow(_masked(image, keep), interpolation="nearest", aspect="equal")
        else:
            tax.imshow(_keep_rgb(keep), interpolation="nearest", aspect="equal")
        tax.set_title(f"({letter}) step {s.step:,}\nkeep_prob {s.keep_prob:.3f}", fontsize=_SMALL_PT + 0.5)
        _plain(tax)
    # a falling schedule leaves the upper right empty, a rising one the lower right
    ax.legend(loc="upper right" if _falls(keep_probs) else "lower right", fontsize=_SMALL_PT + 0.5, frameon=True)
    if title:
        fig.suptitle(title, fontsize=_SUPTITLE_PT)
    return fig


def _letter(i: int) -> str:
    return "abcdefghijklmnopqrstuvwxyz"[i] if i < 26 else str(i + 1)


def _falls(values: np.ndarray) -> bool:
    return bool(values.size >= 2 and values[-1] < values[0])


def _keep_rgb(keep: np.ndarray) -> np.ndarray:
    """A bare mask as RGB: kept light grey, dropped in COLORS['dropped']."""
    out = np.full(keep.shape + (3,), 235, np.uint8)
    out[~keep] = np.rint(np.array(to_rgb(COLORS["dropped"])) * 255).astype(np.uint8)
    return out


def figure_gamma_sweep(
    block_sizes: np.ndarray,
    series: Mapping[str, np.ndarray],
    *,
    target: float,
    title: str,
    measured: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    xlabel: str = "block size",
) -> Figure:
    """Realized drop rate (fraction, shown as %) against block size, one line per scheme.

    series: name -> (B,) expected realized drop rate per block size; NaN = unsupported
    there (a gap). target: the intended drop rate, drawn dashed. measured: name ->
    ((B,) mean, (B,) standard error) of sampled drop rates, drawn as error bars.
    """
    x = np.asarray(block_sizes, dtype=np.float64).ravel()
    fig = _new_figure((9.0, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    colors = _series_colors(list(series) + [k for k in (measured or {}) if k not in series])
    ymax = float(target)
    for i, (name, ys) in enumerate(series.items()):
        y = np.asarray(ys, dtype=np.float64).ravel()
        if y.shape != x.shape:
            raise ValueError(f"series {name!r} has {y.size} values for {x.size} block sizes")
        # later series thinner with smaller markers, so coinciding curves stay visible
        ax.plot(
            x, y, color=colors[name], marker=_MARKERS[i % len(_MARKERS)], ms=max(8.0 - 1.5 * i, 4.0),
            lw=max(3.2 - 0.7 * i, 1.2), label=name, zorder=2 + 0.01 * i,
        )
        if np.isfinite(y).any():
            ymax = max(ymax, float(np.nanmax(y)))
    ax.axhline(target, color=COLORS["target"], ls="--", lw=1.2, label=f"target {target:.1%}", zorder=3)

    if measured:
        step = float(np.min(np.diff(np.unique(x)))) if np.unique(x).size > 1 else 1.0
        m = len(measured)
        for i, (name, (mean, sem)) in enumerate(measured.items()):
            mean = np.asarray(mean, dtype=np.float64).ravel()
            sem = np.asarray(sem, dtype=np.float64).ravel()
            if mean.shape != x.shape or sem.shape != x.shape:
                raise ValueError(f"measured {name!r} must have {x.size} means and standard errors")
            offset = (i - (m - 1) / 2) * 0.12 * step
            ax.errorbar(
                x + offset, mean, yerr=sem, fmt="o", ms=4.5, mfc="white", mec=colors[name],
                ecolor=colors[name], elinewidth=1.2, capsize=3, zorder=4,
                label=f"{name} ± s.e." if "measured" in name.lower() else f"{name} (measured, ± s.e.)",
            )
            top = mean + np.nan_to_num(sem)
            if np.isfinite(top).any():
                ymax = max(ymax, float(np.nanmax(top)))

    ax.set_ylim(0, ymax * 1.12 if ymax > 0 else 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if 0 < x.size <= 16:
        ax.set_xticks(np.unique(x))
    ax.set_xlabel(xlabel, fontsize=_TITLE_PT)
    ax.set_ylabel("realized drop rate", fontsize=_TITLE_PT)
    ax.set_title(title, fontsize=_SUPTITLE_PT)
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=_SMALL_PT + 0.5)
    return fig


def _series_colors(names: Sequence[str]) -> dict[str, str]:
    """Method names get their COLORS entry; other names take unused Okabe-Ito colours."""
    pool = [COLORS[m] for m in _METHODS] + list(_EXTRA_COLORS)
    used = {COLORS[n] for n in names if n in _METHODS}
    free = [c for c in pool if c not in used] or pool
    out, k = {}, 0
    for n in names:
        if n in _METHODS:
            out[n] = COLORS[n]
        else:
            out[n] = free[k % len(free)]
            k += 1
    return out


# --------------------------------------------------------------------------- feature maps


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
        "dropped_fraction", [(x, (r, g, b, _DROPPED_ALPHA * np.sqrt(x))) for x in xs]
    )


def _overlay_drop(ax, crop: np.ndarray, drop_fraction: np.ndarray):
    """The dimmed crop with the (h, w) dropped fraction drawn per feature cell (nearest)."""
    H, W = crop.shape[:2]
    h, w = drop_fraction.shape
    ax.imshow(np.rint(crop * _DIM).astype(np.uint8), interpolation="nearest", aspect="equal")
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
    cb.ax.tick_params(labelsize=_SMALL_PT)
    if binary:
        cb.set_ticks([0.0, 1.0], labels=["kept", "dropped"])
        cb.set_label("one mask shared by all channels", fontsize=_SMALL_PT)
    else:
        fmt = PercentFormatter(xmax=1.0)
        (cb.ax.xaxis if location in ("bottom", "top") else cb.ax.yaxis).set_major_formatter(fmt)
        cb.set_label("fraction of channels dropped", fontsize=_SMALL_PT)


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


def _label(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _pred_bars(ax, preds: Sequence[tuple[str, float]], color: str, title: str) -> None:
    """Horizontal bars of top-k (label, probability), the top-1 at the top, % as text."""
    preds = list(preds)[:5]
    labels = [_label(str(lbl)) for lbl, _ in preds]
    probs = [float(p) for _, p in preds]
    y = np.arange(len(preds))[::-1]
    ax.barh(y, probs, color=color, height=0.7)
    for yi, p in zip(y, probs):
        inside = p > 0.75
        ax.text(
            p - 0.02 if inside else p + 0.015, yi, f"{p:.1%}", va="center",
            ha="right" if inside else "left", fontsize=_SMALL_PT,
            color="white" if inside else "black",
        )
    ax.set_yticks(y, labels, fontsize=_SMALL_PT + 0.5)
    ax.set_xlim(0, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.tick_params(axis="x", labelsize=_SMALL_PT)
    ax.set_title(title, fontsize=_TITLE_PT)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


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
    crop = _check_image(crop)
    before = _check_map(act_before, "act_before")
    after = _check_map(act_after, "act_after", before.shape)
    drop = _check_map(drop_fraction, "drop_fraction", before.shape)
    tcb = np.asarray(top_channels_before, dtype=np.float64)
    tca = np.asarray(top_channels_after, dtype=np.float64)
    if tcb.ndim != 3 or tcb.shape != tca.shape:
        raise ValueError(f"top_channels_before/after must both be (k, h, w), got {tcb.shape} and {tca.shape}")
    k = min(tcb.shape[0], 8)
    t = {k_: titles.get(k_, k_.replace("_", " ")) for k_ in ("image", "mask", "after", "channels", "before_preds", "after_preds")}

    # A fixed layout (figure fractions of 13 x 9.6 in): the constrained layout engine took about
    # half of this figure's drawing time, which `show --layer` pays on every call.
    fig = Figure(figsize=(13.0, 9.6), dpi=100)
    FigureCanvasAgg(fig)
    if suptitle:
        fig.suptitle(suptitle, fontsize=_SUPTITLE_PT + 1, y=0.99, va="top")

    # top row: activation before over the crop | dropped fraction | activation after
    lefts = (0.035, 0.3525, 0.67)
    ax_i, ax_m, ax_a = (fig.add_axes((x, 0.49, 0.295, 0.40)) for x in lefts)
    finite = np.concatenate([before[np.isfinite(before)], after[np.isfinite(after)]])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0
    im_b = _overlay_activation(ax_i, crop, before, vmin, vmax)
    im_d = _overlay_drop(ax_m, crop, drop)
    _overlay_activation(ax_a, crop, after, vmin, vmax)
    for ax, key in ((ax_i, "image"), (ax_m, "mask"), (ax_a, "after")):
        ax.set_title(_wrap(t[key], 3.9), fontsize=_TITLE_PT)
        _plain(ax)
    _plain(ax_m, frame=_method_color(method))
    for x in (lefts[0], lefts[2]):
        cb = fig.colorbar(im_b, cax=fig.add_axes((x + 0.02, 0.455, 0.255, 0.014)), orientation="horizontal")
        cb.set_label("mean activation over channels (shared scale)", fontsize=_SMALL_PT)
        cb.ax.tick_params(labelsize=_SMALL_PT)
    _drop_key(fig, ax_m, im_d, _is_binary(drop), cax=fig.add_axes((lefts[1] + 0.02, 0.455, 0.255, 0.014)))

    # bottom left: the most active channels, before (upper row) and after (lower row), each row one
    # mosaic image (one axes per row draws far faster than one per channel)
    if k:
        rows = _channel_mosaics(tcb[:k], tca[:k])
        h, w = tcb.shape[1:]
        width = min(0.53, 0.066 * k)
        height = width * 13.0 / 9.6 * h / rows[0].shape[1]
        x0 = 0.06 + (0.53 - width) / 2
        cmap = matplotlib.colormaps[ACTIVATION_CMAP].with_extremes(bad="white")
        for r, (mosaic, label) in enumerate(zip(rows, ("before", "after"))):
            ax = fig.add_axes((x0, 0.25 - r * (height + 0.035), width, height))
            ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
            _plain(ax)
            ax.set_ylabel(label, fontsize=_TITLE_PT)
        for j in range(k):
            name = f"ch {channel_ids[j]}" if channel_ids is not None and j < len(channel_ids) else f"#{j + 1}"
            fig.text(x0 + width * (j * (w + 1) + w / 2) / rows[0].shape[1], 0.25 + height + 0.008, name,
                     ha="center", va="bottom", fontsize=_SMALL_PT + 0.5)
        fig.text(0.325, 0.375, t["channels"], ha="center", fontsize=_TITLE_PT + 0.5)
        fig.text(0.325, 0.07, "each column: one channel, before and after on one colour scale",
                 ha="center", fontsize=_SMALL_PT)

    # bottom right: top-5 before and after
    ax_pb = fig.add_axes((0.795, 0.255, 0.18, 0.135))
    ax_pa = fig.add_axes((0.795, 0.055, 0.18, 0.135))
    _pred_bars(ax_pb, preds_before, "0.55", t["before_preds"])
    _pred_bars(ax_pa, preds_after, _method_color(method), t["after_preds"])
    return fig


def figure_feature_compare(
    crop: np.ndarray, columns: Sequence[FeatureColumn], *, suptitle: str | None = None
) -> Figure:
    """One column per method: dropped fraction over the crop, activation after, top-1 after.

    crop: (S, S, 3) uint8. Each column's drop_fraction and act_after are (h, w); activations
    share one colour scale across columns so they can be compared; top1_prob in [0, 1].
    """
    crop = _check_image(crop)
    if not columns:
        raise ValueError("figure_feature_compare needs at least one column")
    n = len(columns)
    drops = [_check_map(c.drop_fraction, f"drop_fraction of {c.method!r}") for c in columns]
    acts = [_check_map(c.act_after, f"act_after of {c.method!r}", d.shape) for c, d in zip(columns, drops)]
    finite = np.concatenate([a[np.isfinite(a)] for a in acts])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1.0

    pw = 3.0
    titles = [_wrap(c.title, pw) for c in columns]
    fig = _new_figure((n * pw + 1.2, 2 * pw + 1.3 + 0.2 * _title_lines(*titles) + (0.4 if suptitle else 0)))
    gs = fig.add_gridspec(3, n, height_ratios=[pw, pw, 0.42])
    masks_axes, act_axes = [], []
    im_d = im_a = None
    for j, (col, drop, act) in enumerate(zip(columns, drops, acts)):
        ax_m = fig.add_subplot(gs[0, j])
        im_d = _overlay_drop(ax_m, crop, drop)
        ax_m.set_title(titles[j], fontsize=_TITLE_PT)
        _plain(ax_m, frame=_method_color(col.method), lw=2.5)
        ax_a = fig.add_subplot(gs[1, j])
        im_a = _overlay_activation(ax_a, crop, act, vmin, vmax)
        _plain(ax_a)
        ax_t = fig.add_subplot(gs[2, j])
        p = float(col.top1_prob)
        ax_t.barh([0], [p], color=_method_color(col.method), height=0.55)
        ax_t.barh([0], [1.0], color="0.92", height=0.55, zorder=0)
        ax_t.set_xlim(0, 1)
        ax_t.set_ylim(-0.5, 0.5)
        ax_t.set_title(f"top-1 after: {_label(col.top1_label, 24)}  {p:.1%}", fontsize=_SMALL_PT + 0.5, loc="left")
        _plain(ax_t)
        masks_axes.append(ax_m)
        act_axes.append(ax_a)
    if masks_axes[0] is not None and act_axes:
        act_axes[0].set_ylabel("activation after", fontsize=_SMALL_PT + 0.5)
        masks_axes[0].set_ylabel("dropped", fontsize=_SMALL_PT + 0.5)
    _drop_key(fig, masks_axes, im_d, all(_is_binary(d) for d in drops), location="right")
    cb = fig.colorbar(im_a, ax=act_axes, location="right", aspect=20, pad=0.01)
    cb.set_label("mean activation (shared scale)", fontsize=_SMALL_PT)
    cb.ax.tick_params(labelsize=_SMALL_PT)
    if suptitle:
        fig.suptitle(suptitle, fontsize=_SUPTITLE_PT)
    return fig
