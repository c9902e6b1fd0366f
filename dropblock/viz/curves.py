"""Curves: the keep_prob schedule with masks at a few steps, and realized drop rate against block size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from dropblock.gamma import linear_keep_prob
from dropblock.viz.display import extent, masked_panel, reduction_factor
from dropblock.viz.style import (
    COLORS, DEFAULT_DPI, EXTRA_COLORS, MARKERS, METHOD_KEYS, SMALL_PT, SUPTITLE_PT, TITLE_PT, check_image, check_keep, new_figure,
    plain,
)


@dataclass
class ScheduleSnapshot:
    """The mask drawn at one training step: keep (H, W) bool at keep_prob (fraction)."""

    step: int
    keep_prob: float
    keep: np.ndarray


def _schedule_axes(ax, steps: np.ndarray, keep_probs: np.ndarray, target: float) -> None:
    """keep_prob against step, the target dashed, limits padded, step ticks with thousands commas."""
    ax.plot(steps, keep_probs, color=COLORS["dropblock"], lw=2.0, label="keep_prob", zorder=2)
    ax.axhline(target, color=COLORS["target"], ls="--", lw=1.2, label=f"target {target:.3g}", zorder=1)
    lo = float(np.nanmin(np.append(keep_probs, target))) if keep_probs.size else target
    hi = float(np.nanmax(np.append(keep_probs, [target, 1.0])))
    pad = max(0.02 * (hi - lo), 0.005)
    ax.set_ylim(lo - 4 * pad, hi + 4 * pad)
    if steps.size:
        span = float(steps.max() - steps.min()) or 1.0
        ax.set_xlim(steps.min() - 0.015 * span, steps.max() + 0.015 * span)
    ax.set_xlabel("training step", fontsize=TITLE_PT)
    ax.set_ylabel("keep_prob", fontsize=TITLE_PT)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)


def _mark_snapshot(ax, snap: ScheduleSnapshot, letter: str, steps: np.ndarray) -> None:
    """A dotted line, a point and a letter where a snapshot was taken."""
    ax.axvline(snap.step, color="0.55", ls=":", lw=1.0, zorder=1)
    ax.plot([snap.step], [snap.keep_prob], "o", ms=6, mfc=COLORS["dropblock"], mec="black", mew=0.6, zorder=3)
    right = steps.size > 0 and snap.step > steps.min() + 0.93 * (steps.max() - steps.min())
    ax.annotate(  # left of the point near the right edge, so the letter stays inside
        letter, (snap.step, snap.keep_prob), xytext=(-4 if right else 4, 5), textcoords="offset points",
        ha="right" if right else "left", fontsize=SMALL_PT + 0.5, fontweight="bold",
    )


def _thumbnail(ax, snap: ScheduleSnapshot, letter: str, image: np.ndarray | None, width_in: float, dpi: float) -> None:
    """image * keep (or the bare mask, dropped in COLORS['dropped']) at the thumbnail's resolution."""
    h, w = snap.keep.shape[:2] if image is None else image.shape[:2]
    keep = check_keep(snap.keep, (h, w))
    if image is not None:
        k = reduction_factor(h, w, (width_in, width_in * h / w), dpi)
        ax.imshow(masked_panel(image, keep, k), interpolation="nearest", aspect="auto", extent=extent(h, w, k))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_box_aspect(h / w)
    else:
        ax.imshow(_keep_rgb(keep), interpolation="nearest", aspect="equal")
    ax.set_title(f"({letter}) step {snap.step:,}\nkeep_prob {snap.keep_prob:.3f}", fontsize=SMALL_PT + 0.5)
    plain(ax)


def _draw_schedule(
    steps: np.ndarray,
    keep_probs: np.ndarray,
    *,
    target: float,
    snapshots: Sequence[ScheduleSnapshot] | None = None,
    image: np.ndarray | None = None,
    title: str | None = None,
    dpi: float = DEFAULT_DPI,
) -> Figure:
    """keep_prob (fraction) against training step, with the target keep_prob dashed.

    steps, keep_probs: (T,) arrays. snapshots: masks at some steps, marked on the curve
    with letters and shown in a row below as image * keep (or the bare mask, dropped in
    COLORS['dropped'], when image is None). image: (H, W, 3) uint8. dpi: the resolution the
    figure will be saved at; thumbnails of larger images are reduced to it.
    """
    steps = np.asarray(steps, dtype=np.float64).ravel()
    keep_probs = np.asarray(keep_probs, dtype=np.float64).ravel()
    if steps.shape != keep_probs.shape:
        raise ValueError(f"steps and keep_probs differ in length: {steps.size} vs {keep_probs.size}")
    snaps = list(snapshots or [])
    image = None if image is None else check_image(image)
    n = len(snaps)
    width = max(8.0, min(1.9 * n, 16.0))
    thumb = 0.0
    if n:
        h, w = snaps[0].keep.shape[:2] if image is None else image.shape[:2]
        thumb = min((width / n - 0.2) * h / w, 2.6) + 0.5  # a thumbnail's height in inches, with its title
    fig = new_figure((width, 3.4 + thumb + (0.35 if title else 0.0)))
    grid = fig.add_gridspec(2, n, height_ratios=[3.4, thumb]) if n else None
    ax = fig.add_subplot(grid[0, :]) if n else fig.add_subplot(1, 1, 1)
    _schedule_axes(ax, steps, keep_probs, target)
    for i, snap in enumerate(snaps):
        _mark_snapshot(ax, snap, _letter(i), steps)
        _thumbnail(fig.add_subplot(grid[1, i]), snap, _letter(i), image, width / n - 0.2, dpi)
    # a falling schedule leaves the upper right empty, a rising one the lower right
    ax.legend(loc="upper right" if _falls(keep_probs) else "lower right", fontsize=SMALL_PT + 0.5, frameon=True)
    if title:
        fig.suptitle(title, fontsize=SUPTITLE_PT)
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


def _plot_series(ax, x: np.ndarray, series: Mapping[str, np.ndarray], colors: dict[str, str]) -> float:
    """One line per scheme, later ones thinner with smaller markers so coinciding curves stay
    visible; returns the largest finite value."""
    top = 0.0
    for i, (name, ys) in enumerate(series.items()):
        y = np.asarray(ys, dtype=np.float64).ravel()
        if y.shape != x.shape:
            raise ValueError(f"series {name!r} has {y.size} values for {x.size} block sizes")
        ax.plot(
            x, y, color=colors[name], marker=MARKERS[i % len(MARKERS)], ms=max(8.0 - 1.5 * i, 4.0),
            lw=max(3.2 - 0.7 * i, 1.2), label=name, zorder=2 + 0.01 * i,
        )
        if np.isfinite(y).any():
            top = max(top, float(np.nanmax(y)))
    return top


def _plot_measured(ax, x: np.ndarray, measured: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   colors: dict[str, str]) -> float:
    """Means with ± one standard error bars, offset sideways per series; returns the highest bar top."""
    step = float(np.min(np.diff(np.unique(x)))) if np.unique(x).size > 1 else 1.0
    top = 0.0
    for i, (name, (mean, sem)) in enumerate(measured.items()):
        mean = np.asarray(mean, dtype=np.float64).ravel()
        sem = np.asarray(sem, dtype=np.float64).ravel()
        if mean.shape != x.shape or sem.shape != x.shape:
            raise ValueError(f"measured {name!r} must have {x.size} means and standard errors")
        offset = (i - (len(measured) - 1) / 2) * 0.12 * step
        ax.errorbar(
            x + offset, mean, yerr=sem, fmt="o", ms=4.5, mfc="white", mec=colors[name],
            ecolor=colors[name], elinewidth=1.2, capsize=3, zorder=4,
            label=f"{name} ± s.e." if "measured" in name.lower() else f"{name} (measured, ± s.e.)",
        )
        highest = mean + np.nan_to_num(sem)
        if np.isfinite(highest).any():
            top = max(top, float(np.nanmax(highest)))
    return top


def _draw_gamma_sweep(
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
    fig = new_figure((9.0, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    colors = _series_colors(list(series) + [k for k in (measured or {}) if k not in series])
    ymax = max(float(target), _plot_series(ax, x, series, colors))
    ax.axhline(target, color=COLORS["target"], ls="--", lw=1.2, label=f"target {target:.1%}", zorder=3)
    if measured:
        ymax = max(ymax, _plot_measured(ax, x, measured, colors))
    ax.set_ylim(0, ymax * 1.12 if ymax > 0 else 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if 0 < x.size <= 16:
        ax.set_xticks(np.unique(x))
    ax.set_xlabel(xlabel, fontsize=TITLE_PT)
    ax.set_ylabel("realized drop rate", fontsize=TITLE_PT)
    ax.set_title(title, fontsize=SUPTITLE_PT)
    ax.grid(True, color="0.9", lw=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=SMALL_PT + 0.5)
    return fig


def _series_colors(names: Sequence[str]) -> dict[str, str]:
    """Method names get their COLORS entry; other names take unused Okabe-Ito colours."""
    pool = [COLORS[m] for m in METHOD_KEYS] + list(EXTRA_COLORS)
    used = {COLORS[n] for n in names if n in METHOD_KEYS}
    free = [c for c in pool if c not in used] or pool
    out, k = {}, 0
    for n in names:
        if n in METHOD_KEYS:
            out[n] = COLORS[n]
        else:
            out[n] = free[k % len(free)]
            k += 1
    return out


def schedule_figure(image: np.ndarray | None, target_keep_prob: float, steps: int, points, dpi: float = DEFAULT_DPI) -> Figure:
    """keep_prob against training step for a linear schedule, with masked images at ``points``
    (:class:`~dropblock.methods.SchedulePoint` list) when an image is given."""
    xs = np.linspace(0, steps, min(steps, 400) + 1).round().astype(int)
    ys = np.array([linear_keep_prob(int(s), steps, target_keep_prob) for s in xs])
    snaps = None
    if image is not None:
        snaps = [ScheduleSnapshot(pt.step, pt.keep_prob, pt.draw.keep[0, 0].cpu().numpy()) for pt in points]
    title = f"Scheduled DropBlock: keep_prob from 1.0 to {target_keep_prob:g} over {steps:,} steps"
    return _draw_schedule(xs, ys, target=target_keep_prob, snapshots=snaps, image=image, title=title, dpi=dpi)


def gamma_sweep_figure(sweep: str, values: Sequence[int], audits: Sequence) -> Figure:
    """Realized drop rate against block size (or feature size) for ``dropblock gamma --plot``: one :class:`~dropblock.audit.GammaAudit`
    per swept block size or feature size (``sweep``: "block-size" or "feature-size")."""
    xs = np.asarray(values)
    series = {"Equation 1 (this library; torchvision, odd blocks)": np.array([a.expected_drop_rate_paper for a in audits]),
              "exact gamma (this library)": np.array([a.p for a in audits])}
    for i, conv in enumerate(audits[0].conventions):
        if conv.name != "torchvision":
            series[conv.label] = np.array([np.nan if a.conventions[i].drop_rate is None else a.conventions[i].drop_rate
                                           for a in audits])
    first = audits[0]
    measured = None
    if first.measured is not None:
        measured = {f"measured ({first.gamma_mode} gamma)": (np.array([a.measured.mean for a in audits]),
                                                             np.array([a.measured.se for a in audits]))}
    where = f"{first.height}x{first.width} map" if sweep == "block-size" else f"block {first.block_size}"
    return _draw_gamma_sweep(xs, series, target=first.p, measured=measured,
                              title=f"Realized drop rate, target {100 * first.p:g}% ({where})",
                              xlabel="block size" if sweep == "block-size" else "feature map size")
