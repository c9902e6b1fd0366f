"""The ``sweep`` figure by depth: where in the network a regularizer moves the prediction most. For each
keep_prob below 1 (a column), each series' agreement and KL against the layer's position in the network
(x: the layer's index among the model's 4-D layers in call order, labelled with its name), with a band of
± one standard error across images; and each series' KL minus the baseline's, paired image by image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from dropblock.paired import PairedDiff
from dropblock.sweep import SweepPoint, se_or_none
from dropblock.viz.style import SMALL_PT, SUPTITLE_PT, TITLE_PT, new_figure, wrap
from dropblock.viz.sweep import figure_legend, paired_panel, series_colors, series_label, series_style

#: (SweepPoint attribute, row title, drawn as a percentage)
ROWS = (("agreement", "top-1 agreement", True), ("kl", "KL(clean ‖ after), nats", False))


def _depth_panel(ax, points: Sequence[SweepPoint], metric: str, percent: bool, styles: dict,
                 layers: Mapping[str, int]) -> None:
    """``metric`` of each series against the layer index, a band of ± 1 SE."""
    by: dict = {}
    for p in points:
        by.setdefault(p.setting.series, []).append(p)
    for key, pts in by.items():
        pts = sorted(pts, key=lambda p: layers[p.layer])
        x = np.array([layers[p.layer] for p in pts], dtype=float)
        stats = [getattr(p, metric) for p in pts]
        y = np.array([s.mean for s in stats])
        se = np.array([se_or_none(s) or 0.0 for s in stats])
        ax.plot(x, y, **styles[key])
        if se.any():
            ax.fill_between(x, y - se, y + se, color=styles[key]["color"], alpha=0.13, lw=0, zorder=2)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if metric == "kl":
        ax.set_ylim(bottom=0)
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)


def _layer_axis(ax, layers: Mapping[str, int], labelled: bool) -> None:
    ticks = sorted(layers.items(), key=lambda kv: kv[1])
    ax.set_xticks([i for _, i in ticks])
    ax.set_xticklabels([name for name, _ in ticks] if labelled else [], rotation=90, fontsize=SMALL_PT - 0.5)
    ax.tick_params(axis="y", labelsize=SMALL_PT)
    if labelled:
        ax.set_xlabel("layer (position in call order)", fontsize=SMALL_PT + 0.5)


def _draw_depth(points: Sequence[SweepPoint], paired: Sequence[PairedDiff], layers: Mapping[str, int],
                baseline: tuple[str, int | None] | None, title: str | None) -> Figure:
    """Columns: keep_probs below 1 (falling; keep_prob 1 alone when there is nothing else). Rows: agreement,
    KL, and KL minus ``baseline``'s (paired) when ``paired`` has such rows. ``layers``: name -> index."""
    if not points:
        raise ValueError("a depth figure needs at least one point")
    keep_probs = sorted({p.setting.keep_prob for p in points if p.setting.keep_prob < 1.0}, reverse=True)
    keep_probs = keep_probs or [1.0]
    series = list(dict.fromkeys(p.setting.series for p in points))
    colors = series_colors(series)
    styles = {key: dict(series_style(i, key, colors[key], len(series)), ms=5.0 - 2.0 * i / max(len(series) - 1, 1))
              for i, key in enumerate(series)}
    diffs = [d for d in paired if d.baseline == baseline and d.metric == "kl"]
    rows = len(ROWS) + bool(diffs)
    width = max(8.0, 0.9 + 4.2 * len(keep_probs))
    columns = max(2, int(width // 3.2))
    legend_rows = -(-len(series) // columns)
    fig = new_figure((width, 2.6 * rows + 1.3 + 0.25 * legend_rows + (0.6 if title else 0.0)))
    axes = np.array(fig.subplots(rows, len(keep_probs), squeeze=False, sharex=True))
    for c, kp in enumerate(keep_probs):
        at = [p for p in points if p.setting.keep_prob == kp]
        for r, (metric, label, percent) in enumerate(ROWS):
            _depth_panel(axes[r, c], at, metric, percent, styles, layers)
            axes[r, c].set_title(f"{label}, keep_prob {kp:g}", fontsize=TITLE_PT)
        if diffs:
            paired_panel(axes[-1, c], [d for d in diffs if d.keep_prob == kp], lambda d: layers[d.layer], styles,
                         f"KL − KL({series_label(*baseline)}), paired, keep_prob {kp:g}")
        for r in range(rows):
            _layer_axis(axes[r, c], layers, labelled=r == rows - 1)
    figure_legend(fig, axes[0], columns=columns)
    if title:
        fig.suptitle(wrap(title, width, SUPTITLE_PT), fontsize=SUPTITLE_PT)
    return fig


def depth_figure(points: Sequence[SweepPoint], paired: Sequence[PairedDiff], *, layers: Mapping[str, int],
                 baseline: tuple[str, int | None] | None, model: str, images: int, masks: int) -> Figure:
    """The ``sweep`` figure for several layers: agreement, KL and KL minus ``baseline``'s (paired) against
    the layer's position (``layers``: name -> index among the model's 4-D layers in call order), one column
    per keep_prob, one line per (method, block size); titled with the model, image count and masks."""
    band = "bands: ± 1 standard error across images" if images > 1 else "one image: no band"
    title = (f"{model}: regularizers at inference, by depth ({len(layers)} layers), {images} "
             f"image{'s' * (images != 1)}, {masks} masks each ({band})")
    return _draw_depth(points, paired, layers, baseline, title)
