"""The ``sweep`` figure: the paper's Figure 5 for your images. Each metric against keep_prob, one line
per method and block size, with a band of ± one standard error (across images); and a panel of each
series' KL minus the baseline's, paired image by image (:mod:`dropblock.paired`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from dropblock.paired import PairedDiff
from dropblock.sweep import SweepPoint, se_or_none
from dropblock.viz.labels import METHOD_LABELS
from dropblock.viz.style import COLORS, EXTRA_COLORS, MARKERS, SMALL_PT, SUPTITLE_PT, TITLE_PT, method_color, new_figure

#: (SweepPoint attribute, panel title, drawn as a percentage)
METRICS = (
    ("agreement", "top-1 agreement with the clean network", True),
    ("kl", "KL(clean ‖ after), nats", False),
    ("accuracy", "top-1 accuracy", True),
    ("drop_rate", "realized drop rate", True),
)


def series_label(method: str, block_size: int | None) -> str:
    """'DropBlock, block 7' or the method's name."""
    label = METHOD_LABELS.get(method, method)
    return label if block_size is None else f"{label}, block {block_size}"


#: colour maps of the block methods' sizes, and colours of the series that are not palette methods
BLOCK_CMAPS = {"dropblock": "Blues", "cutout-input+dropblock": "Purples"}
SERIES_COLORS = {"cutout-input": EXTRA_COLORS[1], "cutout-input+dropblock": "#6A51A3"}


def series_colors(series: Sequence[tuple[str, int | None]]) -> dict[tuple[str, int | None], str]:
    """A colour per (method, block size): DropBlock's block sizes in blues from light (small) to dark
    (large), Cutout on the input with DropBlock's in purples, the other methods in their palette colour."""
    colors = {}
    for method, block in series:
        blocks = sorted({b for m, b in series if m == method and b is not None})
        if method in BLOCK_CMAPS and len(blocks) > 1:
            cmap = colormaps[BLOCK_CMAPS[method]]
            colors[(method, block)] = cmap(0.45 + 0.55 * blocks.index(block) / (len(blocks) - 1))
        else:
            colors[(method, block)] = SERIES_COLORS.get(method) or method_color(method)
    return colors


def _series(points: Sequence[SweepPoint]) -> dict[tuple[str, int | None], list[SweepPoint]]:
    out: dict[tuple[str, int | None], list[SweepPoint]] = {}
    for point in points:
        out.setdefault(point.setting.series, []).append(point)
    return {k: sorted(v, key=lambda p: -p.setting.keep_prob) for k, v in out.items()}


#: line styles of the methods other than DropBlock (solid): a dashed line on top of another series leaves
#: it visible through the gaps (DropBlock with block 1 and dropout often coincide).
DASHES = {"dropout": (0, (5, 2)), "spatial-dropout": (0, (1.5, 1.5)), "cutout": (0, (6, 2, 1.5, 2)),
          "cutout-input": (0, (8, 2)), "cutout-input+dropblock": (0, (3, 1, 1, 1))}


def series_style(i: int, key: tuple[str, int | None], color, n: int) -> dict:
    """Plot keywords of series i of n: its marker, solid for DropBlock or its method's dash pattern, and a
    marker and width that shrink from the first series to the last, so that one drawn over another
    leaves a ring of it showing."""
    shrink = i / max(n - 1, 1)
    return dict(color=color, marker=MARKERS[i % len(MARKERS)], ms=8.5 - 4.5 * shrink, lw=2.6 - 1.2 * shrink,
                ls=DASHES.get(key[0], "-"), label=series_label(*key), zorder=3 + 0.01 * i)


def _panel(ax, lines, metric: str, title: str, percent: bool, colors, keep_probs) -> None:
    """One metric against keep_prob (1 on the left, falling to the right), a band of ± 1 SE; the drop
    rate's target 1 − keep_prob drawn over the series."""
    for i, (key, pts) in enumerate(lines.items()):
        stats = [getattr(p, metric) for p in pts]
        x = np.array([p.setting.keep_prob for p, s in zip(pts, stats) if s is not None])
        if not x.size:
            continue
        kept = [s for s in stats if s is not None]
        y = np.array([s.mean for s in kept])
        se = np.array([se_or_none(s) or 0.0 for s in kept])
        ax.plot(x, y, **series_style(i, key, colors[key], len(lines)))
        if se.any():
            ax.fill_between(x, y - se, y + se, color=colors[key], alpha=0.13, lw=0, zorder=2)
    if metric == "drop_rate":
        xs = np.array(sorted(keep_probs))
        ax.plot(xs, 1 - xs, ls=(0, (3, 2)), color=COLORS["target"], lw=1.1, label="target (1 − keep_prob)",
                zorder=5)
    ax.set_xticks(sorted(keep_probs))
    ax.set_xlim(max(keep_probs) + 0.01, min(keep_probs) - 0.01)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if metric == "kl":
        ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=TITLE_PT)
    ax.set_xlabel("keep_prob", fontsize=SMALL_PT + 0.5)
    ax.tick_params(labelsize=SMALL_PT)
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)


def paired_panel(ax, diffs: Sequence[PairedDiff], x_of, styles: dict, title: str) -> None:
    """Each series' paired differences (one metric, one baseline) at x = ``x_of(diff)``, a band of ± 1 SE,
    and the zero line (no difference). ``styles``: plot keywords per series (as the other panels draw it)."""
    by: dict = {}
    for d in diffs:
        by.setdefault(d.series, []).append(d)
    for key, ds in by.items():
        ds = sorted(ds, key=x_of)
        x = np.array([x_of(d) for d in ds], dtype=float)
        y = np.array([d.mean for d in ds])
        se = np.array([d.se or 0.0 for d in ds])
        ax.plot(x, y, **styles[key])
        if se.any():
            ax.fill_between(x, y - se, y + se, color=styles[key]["color"], alpha=0.13, lw=0, zorder=2)
    ax.axhline(0.0, color="0.35", lw=0.9, zorder=1.5)
    ax.set_title(title, fontsize=TITLE_PT)
    ax.tick_params(labelsize=SMALL_PT)
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)


def figure_legend(fig: Figure, axes, columns: int = 4) -> None:
    """One legend below the panels (at most ``columns`` entries a row): each label once, in the order the
    panels first drew it."""
    found: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    fig.legend(list(found.values()), list(found), loc="outside lower center", ncols=min(len(found), columns),
               fontsize=SMALL_PT + 0.5, frameon=False)


def _draw_sweep(points: Sequence[SweepPoint], *, title: str | None = None, paired: Sequence[PairedDiff] = (),
                baseline: tuple[str, int | None] | None = None) -> Figure:
    """Agreement, KL, accuracy (when any image has a label) and realized drop rate against keep_prob; with
    ``paired`` rows against ``baseline``, a panel of each series' KL minus the baseline's.

    points: :class:`~dropblock.sweep.SweepPoint` of any settings (one layer); one line per (method, block
    size), a band of ± one standard error where there are two images or more.
    """
    if not points:
        raise ValueError("a sweep figure needs at least one point")
    metrics = [m for m in METRICS if m[0] != "accuracy" or any(p.accuracy is not None for p in points)]
    lines = _series(points)
    colors = series_colors(list(lines))
    keep_probs = sorted({p.setting.keep_prob for p in points})
    diffs = [d for d in paired if d.baseline == baseline and d.metric == "kl" and d.series in lines]
    rows = -(-(len(lines) + 1) // 4)  # legend rows below the panels
    panels = len(metrics) + bool(diffs)
    fig = new_figure((4.0 * panels, 3.7 + 0.25 * rows + (0.35 if title else 0.0)))
    axes = np.atleast_1d(fig.subplots(1, panels))
    for ax, (metric, label, percent) in zip(axes, metrics):
        _panel(ax, lines, metric, label, percent, colors, keep_probs)
    if diffs:
        styles = {key: series_style(i, key, colors[key], len(lines)) for i, key in enumerate(lines)}
        paired_panel(axes[-1], diffs, lambda d: d.keep_prob, styles,
                     f"KL − KL({series_label(*baseline)}), paired, nats")
        axes[-1].set_xticks(sorted(keep_probs))
        axes[-1].set_xlim(max(keep_probs) + 0.01, min(keep_probs) - 0.01)
        axes[-1].set_xlabel("keep_prob", fontsize=SMALL_PT + 0.5)
    figure_legend(fig, axes)
    if title:
        fig.suptitle(title, fontsize=SUPTITLE_PT)
    return fig


def sweep_figure(points: Sequence[SweepPoint], *, model: str, layer: str, images: int, masks: int,
                 paired: Sequence[PairedDiff] = (), baseline: tuple[str, int | None] | None = None) -> Figure:
    """The ``sweep`` figure: agreement, KL, accuracy (when any image has a label) and realized drop rate
    against keep_prob, one line per (method, block size), and each series' KL minus ``baseline``'s, paired
    (when ``paired`` has such rows); titled with the model, layer, image count and masks per image."""
    band = "band: ± 1 standard error across images" if images > 1 else "one image: no band"
    title = (f"{model} {layer}: regularizer applied at inference, {images} image{'s' * (images != 1)}, "
             f"{masks} masks each ({band})")
    return _draw_sweep(points, title=title, paired=paired, baseline=baseline)
