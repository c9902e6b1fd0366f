"""Mask figures on an image: ``show`` (image, mask, masked) and ``compare`` (one column per method).

Panels are drawn at the resolution they are shown at (:mod:`dropblock.viz.display`); masks come
in at full resolution and seed positions in full-resolution pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dropblock.viz.labels import METHOD_LABELS, describe
from dropblock.viz.display import extent, mask_panels, reduced_image, reduction_factor
from dropblock.viz.style import (
    COLORS, DEFAULT_DPI, DROPPED_ALPHA, SMALL_PT, SUPTITLE_PT, TITLE_PT, check_image, check_keep, check_seeds,
    method_color, plain, title_lines, wrap,
)

@dataclass
class CompareColumn:
    """One column of :func:`_draw_compare`.

    method: a key of COLORS ("dropblock", "dropout", "spatial_dropout", "cutout") or any name.
    keep: (H, W) bool, True = kept. seeds: (K, 2) float (row, col) pixel centres, or None.
    """

    method: str
    keep: np.ndarray
    seeds: np.ndarray | None
    mask_title: str
    masked_title: str


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
    handles = [Patch(facecolor=COLORS["dropped"], alpha=DROPPED_ALPHA, label="dropped")]
    if with_seeds:
        handles.append(
            Line2D([], [], ls="", marker="o", ms=5, mfc=COLORS["seed"], mec="black", mew=0.5,
                   label="DropBlock seed (block centre)")
        )
    return handles



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
    line = TITLE_PT * 1.25 / 72.0
    title_h = [(title_lines(*row) * line + 0.1) if any(row) else 0.05 for row in fig_rows]
    sup_h = (SUPTITLE_PT * 1.35 / 72.0 + 0.08) if suptitle else 0.0
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
            ax.set_title(title, fontsize=TITLE_PT, pad=4)
            axes_row.append(ax)
        axes.append(axes_row)
        y -= 0.06
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_PT, y=1 - top / fh, va="top")
    return fig, axes, (bottom + legend_h / 2) / fh


def _show_panel(ax, panel: np.ndarray, h: int, w: int, k: int) -> None:
    """A k-reduced panel on the full image's pixel coordinates (limits at the image's border)."""
    ax.imshow(panel, interpolation="nearest", aspect="auto", extent=extent(h, w, k))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _legend(fig, legend_y: float, with_seeds: bool) -> None:
    fig.legend(
        handles=_mask_legend_handles(with_seeds), loc="center", bbox_to_anchor=(0.5, legend_y), ncol=2,
        frameon=False, fontsize=SMALL_PT, handlelength=1.2, columnspacing=1.0,
    )


def _has_seeds(seeds: np.ndarray | None) -> bool:
    return seeds is not None and len(seeds) > 0


def _draw_show(
    image: np.ndarray,
    keep: np.ndarray,
    *,
    seeds: np.ndarray | None = None,
    method: str = "dropblock",
    titles: tuple[str, str, str] = ("image", "mask", "masked"),
    suptitle: str | None = None,
    dpi: float = DEFAULT_DPI,
) -> Figure:
    """Three panels: the image, the mask over the dimmed image, and image * keep.

    image: (H, W, 3) uint8. keep: (H, W) bool, True = kept. seeds: (K, 2) float
    (row, col) pixel centres of DropBlock blocks, drawn as small markers, or None.
    method picks the mask panel's frame colour from COLORS. dpi: the resolution the figure
    will be saved at; larger images are reduced to it. Returns a Figure (no pyplot).
    """
    image = check_image(image)
    h, w = image.shape[:2]
    keep = check_keep(keep, (h, w))
    seeds = check_seeds(seeds)
    if len(titles) != 3:
        raise ValueError(f"titles must be 3 strings (image, mask, masked), got {len(titles)}")
    size = dict(width=4.0, max_height=4.6, min_width=3.0)
    pw, ph = _panel_size(h, w, **size)
    fig, grid, legend_y = _image_grid([[wrap(t, pw) for t in titles]], h, w, suptitle=suptitle, legend=True, **size)
    k = reduction_factor(h, w, (pw, ph), dpi)
    for ax, panel in zip(grid[0], mask_panels(image, keep, k)):
        _show_panel(ax, panel, h, w, k)
        plain(ax)
    plain(grid[0][1], frame=method_color(method))
    _draw_seeds(grid[0][1], seeds)
    _legend(fig, legend_y, _has_seeds(seeds))
    return fig


def _draw_compare(
    image: np.ndarray, columns: Sequence[CompareColumn], *, suptitle: str | None = None, dpi: float = DEFAULT_DPI,
) -> Figure:
    """A row of masks (over the dimmed image) and a row of masked images, one column per method.

    image: (H, W, 3) uint8; each column's keep is (H, W) bool (True = kept) and its seeds
    (K, 2) (row, col) pixels or None. Mask panels are framed in the method's colour. dpi: as
    in :func:`_draw_show`.
    """
    image = check_image(image)
    h, w = image.shape[:2]
    if not columns:
        raise ValueError("a compare figure needs at least one column")
    keeps = [check_keep(c.keep, (h, w), f"keep of {c.method!r}") for c in columns]
    seeds = [check_seeds(c.seeds) for c in columns]
    size = dict(width=3.3, max_height=3.6, min_width=2.6)
    pw, ph = _panel_size(h, w, **size)
    top = [wrap(c.mask_title, pw) for c in columns]
    bottom = [wrap(c.masked_title, pw) for c in columns]
    fig, (row_m, row_x), legend_y = _image_grid([top, bottom], h, w, suptitle=suptitle, legend=True, **size)
    k = reduction_factor(h, w, (pw, ph), dpi)
    image_reduced = reduced_image(image, k)
    for col, keep, sd, ax_m, ax_x in zip(columns, keeps, seeds, row_m, row_x):
        _, overlay, masked = mask_panels(image, keep, k, image_reduced)
        _show_panel(ax_m, overlay, h, w, k)
        _draw_seeds(ax_m, sd)
        plain(ax_m, frame=method_color(col.method), lw=2.5)
        _show_panel(ax_x, masked, h, w, k)
        plain(ax_x)
    _legend(fig, legend_y, any(_has_seeds(sd) for sd in seeds))
    return fig


def _seed_centres(draw) -> np.ndarray | None:
    return None if draw.centres is None or draw.method != "dropblock" else draw.centres.cpu().numpy()


def show_figure(image: np.ndarray, name: str, draw, p: float, dpi: float = DEFAULT_DPI) -> Figure:
    """The ``show`` figure of one draw on an image: the image, the mask (seeds marked) and image * keep,
    titled with the method, its parameters and the realized drop rate (target drop rate p).

    image: (H, W, 3) uint8. draw: a :class:`~dropblock.methods.MaskDraw` of shape (1, 1, H, W). dpi: the
    resolution the figure will be saved at (larger images are reduced to it)."""
    h, w = image.shape[:2]
    titles = (
        f"{name} ({w}x{h})",
        f"{METHOD_LABELS[draw.method]} mask: {describe(draw.method, draw.params, draw.gamma)}",
        f"dropped {100 * draw.drop_rate:.1f}% (target {100 * p:g}%, expected {100 * draw.expected_drop_rate:.1f}%)",
    )
    return _draw_show(image, draw.keep[0, 0].cpu().numpy(), seeds=_seed_centres(draw), method=draw.method,
                       titles=titles, dpi=dpi)


def compare_figure(image: np.ndarray, name: str, summaries: list, p: float,
                   dpi: float = DEFAULT_DPI) -> Figure:
    """The ``compare`` figure: one column per method (a :class:`~dropblock.methods.MethodSummary` each, its
    draw (1, 1, H, W)), the mask over the dimmed image above image * keep, the realized rate in each title."""
    cols = []
    for summary in summaries:
        d = summary.draw
        cols.append(CompareColumn(
            method=d.method, keep=d.keep[0, 0].cpu().numpy(), seeds=_seed_centres(d),
            mask_title=f"{METHOD_LABELS[d.method]}: {describe(d.method, d.params, d.gamma)}",
            masked_title=f"dropped {100 * d.drop_rate:.1f}% (expected {100 * d.expected_drop_rate:.1f}%)",
        ))
    suptitle = f"{name}: DropBlock, dropout and Cutout at a {100 * p:g}% target drop rate"
    return _draw_compare(image, cols, suptitle=suptitle, dpi=dpi)
