"""The figures and numbers of ``show``, ``compare`` and ``schedule`` on an image (pixel units).

One mask is shared by the three colour channels: on an image, the regularizer removes regions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dropblock.gamma import linear_keep_prob
from dropblock.methods import METHODS, MaskDraw, draw_mask
from dropblock.sampling import make_generator

NAMES = {"dropblock": "DropBlock", "dropout": "Dropout", "cutout": "Cutout"}


def default_block_size(height: int, width: int) -> int:
    """Block side in pixels that makes blocks visible on a photo: 1/8 of the shorter side (at least 1)."""
    return max(1, round(min(height, width) / 8))


@dataclass
class MethodSummary:
    """One method's mask on the image, and its drop rate over ``samples`` masks (mean, se) when asked."""

    draw: MaskDraw
    samples: int = 0
    mean: float | None = None
    se: float | None = None


def describe(method: str, params: dict, gamma: float | None, unit: str = "px") -> str:
    """Short parameter text of a mask, e.g. 'block 38 px, γ=8.61e-05 (paper)'."""
    if method == "dropblock":
        bh, bw = params["block"]
        block = f"{bh} {unit}" if bh == bw else f"{bh}x{bw} {unit}"
        return f"block {block}, γ={gamma:.3g} ({params['gamma_mode']})"
    if method == "cutout":
        n = params["n_holes"]
        return f"{n} hole{'s' if n > 1 else ''} of {params['length']} {unit}"
    return "each unit independently"


def draw_on_image(method: str, height: int, width: int, p: float, *, block_size: int, gamma: str,
                  generator: torch.Generator | None) -> MaskDraw:
    """One mask of ``method`` for an H x W image (one channel shared by RGB)."""
    return draw_mask(method, (1, 1, height, width), p, block_size=block_size, gamma=gamma, generator=generator)


def sample_rates(method: str, height: int, width: int, p: float, *, block_size: int, gamma: str, samples: int,
                 generator: torch.Generator | None, progress=None) -> tuple[float, float]:
    """Mean realized drop rate over ``samples`` masks and its standard error."""
    rates = []
    batch = max(1, (1 << 22) // (height * width))
    done = 0
    while done < samples:
        k = min(batch, samples - done)
        m = draw_mask(method, (k, 1, height, width), p, block_size=block_size, gamma=gamma, generator=generator)
        rates.append((~m.keep).reshape(k, -1).double().mean(dim=1))
        done += k
        if progress is not None:
            progress(k)
    r = torch.cat(rates)
    se = r.std().item() / math.sqrt(samples) if samples > 1 else 0.0
    return r.mean().item(), se


def show_figure(image: np.ndarray, name: str, d: MaskDraw, p: float):
    """figure_show with titles that give the method, its parameters and the realized drop rate."""
    from dropblock.viz import figure_show

    h, w = image.shape[:2]
    keep = d.keep[0, 0].cpu().numpy()
    seeds = None if d.centres is None or d.method != "dropblock" else d.centres.cpu().numpy()
    titles = (
        f"{name} ({w}x{h})",
        f"{NAMES[d.method]} mask: {describe(d.method, d.params, d.gamma)}",
        f"dropped {100 * d.drop_rate:.1f}% (target {100 * p:g}%, expected {100 * d.expected_drop_rate:.1f}%)",
    )
    return figure_show(image, keep, seeds=seeds, method=d.method, titles=titles)


def compare_figure(image: np.ndarray, name: str, summaries: list[MethodSummary], p: float):
    """figure_compare: one column per method, realized rate in each title."""
    from dropblock.viz import CompareColumn, figure_compare

    cols = []
    for s in summaries:
        d = s.draw
        seeds = None if d.centres is None or d.method != "dropblock" else d.centres.cpu().numpy()
        cols.append(CompareColumn(
            method=d.method, keep=d.keep[0, 0].cpu().numpy(), seeds=seeds,
            mask_title=f"{NAMES[d.method]}: {describe(d.method, d.params, d.gamma)}",
            masked_title=f"dropped {100 * d.drop_rate:.1f}% (expected {100 * d.expected_drop_rate:.1f}%)",
        ))
    return figure_compare(image, cols, suptitle=f"{name}: DropBlock, dropout and Cutout at a {100 * p:g}% target drop rate")


def compare_on_image(image: np.ndarray, p: float, *, block_size: int, gamma: str, seed: int, samples: int = 0,
                     progress=None) -> list[MethodSummary]:
    """A mask of each method at the same target drop rate, and optional means over ``samples`` masks."""
    h, w = image.shape[:2]
    out = []
    for i, method in enumerate(METHODS):
        gen = make_generator(seed + i, "cpu")
        s = MethodSummary(draw_on_image(method, h, w, p, block_size=block_size, gamma=gamma, generator=gen))
        if samples > 0:
            s.samples = samples
            s.mean, s.se = sample_rates(method, h, w, p, block_size=block_size, gamma=gamma, samples=samples,
                                        generator=gen, progress=progress)
        out.append(s)
    return out


@dataclass
class SchedulePoint:
    step: int
    keep_prob: float
    draw: MaskDraw | None


def schedule_points(target_keep_prob: float, steps: int, snapshots: int) -> list[tuple[int, float]]:
    """(step, keep_prob) at ``snapshots`` evenly spaced points after step 0, the last at ``steps``."""
    points = sorted({round(steps * (i + 1) / snapshots) for i in range(snapshots)})
    return [(s, linear_keep_prob(s, steps, target_keep_prob)) for s in points]


def schedule_on_image(image: np.ndarray | None, target_keep_prob: float, steps: int, snapshots: int, *,
                      block_size: int, gamma: str, seed: int) -> list[SchedulePoint]:
    """The schedule's keep_prob at a few steps, each with a DropBlock mask on the image when given."""
    out = []
    for step, kp in schedule_points(target_keep_prob, steps, snapshots):
        d = None
        if image is not None:
            h, w = image.shape[:2]
            d = draw_on_image("dropblock", h, w, 1.0 - kp, block_size=block_size, gamma=gamma,
                              generator=make_generator(seed, "cpu"))
        out.append(SchedulePoint(step, kp, d))
    return out


def schedule_figure(image: np.ndarray | None, target_keep_prob: float, steps: int, points: list[SchedulePoint]):
    """figure_schedule: keep_prob against step, with masked images at the snapshot steps."""
    from dropblock.viz import ScheduleSnapshot, figure_schedule

    xs = np.linspace(0, steps, min(steps, 400) + 1).round().astype(int)
    ys = np.array([linear_keep_prob(int(s), steps, target_keep_prob) for s in xs])
    snaps = None
    if image is not None:
        snaps = [ScheduleSnapshot(pt.step, pt.keep_prob, pt.draw.keep[0, 0].cpu().numpy()) for pt in points]
    return figure_schedule(xs, ys, target=target_keep_prob, snapshots=snaps, image=image,
                           title=f"Scheduled DropBlock: keep_prob from 1.0 to {target_keep_prob:g} over {steps:,} steps")
