"""One entry point for the three regularizers shown and compared at equal drop rates.

``draw_mask(method, shape, p, ...)`` returns the keep mask, its seeds or hole centres, and the exact
expected drop rate, so that DropBlock, dropout and Cutout can be shown and compared side by side.
On an image (``show``, ``compare``, ``schedule``) one mask is shared by the three colour channels
and sizes are in pixels: the regularizer removes regions. On a CNN's feature maps spatial dropout
(whole channels) joins them: :data:`FEATURE_METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from dropblock.errors import UsageError
from dropblock.gamma import (
    clip_block, cutout_expected_drop_rate, cutout_length_for, expected_drop_rate, linear_keep_prob,
)
from dropblock.masks import cutout_mask, dropblock_mask, dropout_mask, spatial_dropout_mask
from dropblock.method_names import FEATURE_METHODS, METHODS  # their torch-free home, re-exported here
from dropblock.rng import make_generator
from dropblock.stats import MeanSE


@dataclass
class MaskDraw:
    """One mask of one method.

    keep: (N, C', H, W) bool, True where kept (C' is 1 when shared by all channels; spatial
        dropout's (N, C', 1, 1) draw is expanded, a view, to the map).
    centres: (K, 2) float (row, col) of DropBlock block centres or Cutout hole centres, for the
        first sample and channel only (what a figure marks); None for dropout.
    gamma: DropBlock's seed probability (None for the others).
    expected_drop_rate: the exact expected fraction dropped.
    params: the method's parameters, for titles and JSON.
    """

    method: str
    keep: torch.Tensor
    centres: torch.Tensor | None
    gamma: float | None
    expected_drop_rate: float
    params: dict = field(default_factory=dict)

    @cached_property
    def drop_rate(self) -> float:
        """Realized fraction dropped in this draw (counted once, without a float copy of the mask)."""
        return 1.0 - int(torch.count_nonzero(self.keep)) / self.keep.numel()


def draw_mask(
    method: str, shape: tuple[int, int, int, int], p: float, *,
    block_size: int = 7, gamma: str = "paper", shared_channels: bool = False, n_holes: int = 1,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> MaskDraw:
    """Draw one mask of ``method`` for an (N, C, H, W) input at target drop rate p.

    DropBlock: blocks of ``block_size`` (clipped to the map), ``gamma`` "paper" or "exact".
    Dropout: each unit with probability p. Spatial dropout: each whole channel with probability p
    (expected drop rate exactly p; with ``shared_channels``, the whole map). Cutout: ``n_holes``
    squares whose side is chosen so that the exact expected erased fraction is closest to p; always
    one mask for all channels.
    """
    n, c, h, w = shape
    if method == "dropblock":
        m = dropblock_mask(shape, p, block_size, gamma=gamma, shared_channels=shared_channels,
                           device=device, generator=generator)
        first = (m.seeds[:, 0] == 0) & (m.seeds[:, 1] == 0)
        return MaskDraw(method, m.keep, m.seed_centres()[first][:, 2:], m.gamma,
                        expected_drop_rate(m.gamma, block_size, h, w),
                        {"block_size": block_size, "block": list(clip_block(block_size, h, w)), "gamma_mode": gamma,
                         "shared_channels": shared_channels})
    if method == "dropout":
        keep = dropout_mask((n, 1 if shared_channels else c, h, w), p, device=device, generator=generator)
        return MaskDraw(method, keep, None, None, p, {"shared_channels": shared_channels})
    if method == "spatial-dropout":
        keep = spatial_dropout_mask((n, 1 if shared_channels else c, h, w), p, device=device, generator=generator)
        return MaskDraw(method, keep.expand(-1, -1, h, w), None, None, p, {"shared_channels": shared_channels})
    if method == "cutout":
        length = cutout_length_for(p, h, w, n_holes) if p > 0 else 1
        if p == 0:
            keep = torch.ones(n, 1, h, w, dtype=torch.bool, device=device)
            return MaskDraw(method, keep, torch.empty(0, 2, dtype=torch.float64, device=device), None, 0.0,
                            {"length": 0, "n_holes": n_holes})
        keep, centres = cutout_mask(shape, n_holes, length, device=device, generator=generator)
        return MaskDraw(method, keep, centres[0].double(), None, cutout_expected_drop_rate(n_holes, length, h, w),
                        {"length": length, "n_holes": n_holes})
    raise UsageError(f"method must be one of {', '.join(FEATURE_METHODS)}; got {method!r}")


def default_block_size(height: int, width: int) -> int:
    """Block side in pixels that makes blocks visible on a photo: 1/8 of the shorter side (at least 1)."""
    return max(1, round(min(height, width) / 8))


def draw_on_image(method: str, height: int, width: int, p: float, *, block_size: int, gamma: str,
                  generator: torch.Generator | None) -> MaskDraw:
    """One mask of ``method`` for an H x W image (one channel shared by RGB), shape (1, 1, H, W)."""
    return draw_mask(method, (1, 1, height, width), p, block_size=block_size, gamma=gamma, generator=generator)


def sample_rates(method: str, height: int, width: int, p: float, *, block_size: int, gamma: str, samples: int,
                 generator: torch.Generator | None, progress=None) -> MeanSE:
    """Realized drop rate over ``samples`` masks on an H x W image: mean and standard error.
    ``progress`` is called with the number of masks after each batch."""
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
    return MeanSE.of(torch.cat(rates).numpy())


@dataclass
class MethodSummary:
    """One method's mask on an image, and its realized drop rate over many masks when asked (else None)."""

    draw: MaskDraw
    rates: MeanSE | None = None


def compare_on_image(height: int, width: int, p: float, *, block_size: int, gamma: str, seed: int,
                     samples: int = 0, progress=None) -> list[MethodSummary]:
    """A mask of each of METHODS on an H x W image at the same target drop rate, and the mean realized
    drop rate over ``samples`` further masks (0: none). Method i draws from ``seed + i``."""
    out = []
    for i, method in enumerate(METHODS):
        gen = make_generator(seed + i, "cpu")
        summary = MethodSummary(draw_on_image(method, height, width, p, block_size=block_size, gamma=gamma,
                                              generator=gen))
        if samples > 0:
            summary.rates = sample_rates(method, height, width, p, block_size=block_size, gamma=gamma,
                                         samples=samples, generator=gen, progress=progress)
        out.append(summary)
    return out


@dataclass
class SchedulePoint:
    """One point of a keep_prob schedule, with the DropBlock mask drawn there (None without an image)."""

    step: int
    keep_prob: float
    draw: MaskDraw | None


def schedule_points(target_keep_prob: float, steps: int, snapshots: int) -> list[tuple[int, float]]:
    """(step, keep_prob) at ``snapshots`` evenly spaced points after step 0, the last at ``steps``."""
    points = sorted({round(steps * (i + 1) / snapshots) for i in range(snapshots)})
    return [(s, linear_keep_prob(s, steps, target_keep_prob)) for s in points]


def schedule_on_image(size: tuple[int, int] | None, target_keep_prob: float, steps: int, snapshots: int, *,
                      block_size: int, gamma: str, seed: int) -> list[SchedulePoint]:
    """The schedule's keep_prob at a few steps, each with a DropBlock mask on an image of ``size``
    (height, width) when given. Every point draws from ``seed``, so the masks differ by keep_prob alone."""
    out = []
    for step, keep_prob in schedule_points(target_keep_prob, steps, snapshots):
        draw = None
        if size is not None:
            draw = draw_on_image("dropblock", *size, 1.0 - keep_prob, block_size=block_size, gamma=gamma,
                                 generator=make_generator(seed, "cpu"))
        out.append(SchedulePoint(step, keep_prob, draw))
    return out
