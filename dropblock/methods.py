"""One entry point for the three regularizers the CLI compares at equal drop rates.

``draw_mask(method, shape, p, ...)`` returns the keep mask, its seeds or hole centres, and the exact
expected drop rate, so that DropBlock, dropout and Cutout can be shown and compared side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dropblock.gamma import clip_block, cutout_expected_drop_rate, cutout_length_for, expected_drop_rate
from dropblock.masks import cutout_mask, dropblock_mask, dropout_mask, resolve_gamma

METHODS = ("dropblock", "dropout", "cutout")


@dataclass
class MaskDraw:
    """One mask of one method.

    keep: (N, C', H, W) bool, True where kept (C' is 1 when shared by all channels).
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

    @property
    def drop_rate(self) -> float:
        """Realized fraction dropped in this draw."""
        return 1.0 - self.keep.float().mean().item()


def draw_mask(
    method: str, shape: tuple[int, int, int, int], p: float, *,
    block_size: int = 7, gamma: str = "paper", shared_channels: bool = False, n_holes: int = 1,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> MaskDraw:
    """Draw one mask of ``method`` for an (N, C, H, W) input at target drop rate p.

    DropBlock: blocks of ``block_size`` (clipped to the map), ``gamma`` "paper" or "exact".
    Dropout: each unit with probability p. Cutout: ``n_holes`` squares whose side is chosen so that
    the exact expected erased fraction is closest to p; always one mask for all channels.
    """
    n, c, h, w = shape
    if method == "dropblock":
        m = dropblock_mask(shape, p, block_size, gamma=gamma, shared_channels=shared_channels,
                           device=device, generator=generator)
        first = (m.seeds[:, 0] == 0) & (m.seeds[:, 1] == 0)
        g = resolve_gamma(gamma, p, block_size, h, w)
        return MaskDraw(method, m.keep, m.seed_centres()[first][:, 2:], m.gamma, expected_drop_rate(g, block_size, h, w),
                        {"block_size": block_size, "block": list(clip_block(block_size, h, w)), "gamma_mode": gamma,
                         "shared_channels": shared_channels})
    if method == "dropout":
        keep = dropout_mask((n, 1 if shared_channels else c, h, w), p, device=device, generator=generator)
        return MaskDraw(method, keep, None, None, p, {"shared_channels": shared_channels})
    if method == "cutout":
        length = cutout_length_for(p, h, w, n_holes) if p > 0 else 1
        if p == 0:
            keep = torch.ones(n, 1, h, w, dtype=torch.bool, device=device)
            return MaskDraw(method, keep, torch.empty(0, 2, dtype=torch.float64, device=device), None, 0.0,
                            {"length": 0, "n_holes": n_holes})
        keep, centres = cutout_mask(shape, n_holes, length, device=device, generator=generator)
        return MaskDraw(method, keep, centres[0].double(), None, cutout_expected_drop_rate(n_holes, length, h, w),
                        {"length": length, "n_holes": n_holes})
    raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
