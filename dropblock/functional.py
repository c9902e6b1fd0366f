"""Functional DropBlock, dropout, spatial dropout and Cutout on (N, C, H, W) tensors.

``drop_block2d(input, p, block_size, inplace=False, eps=1e-6, training=True)`` is call-compatible
with ``torchvision.ops.drop_block2d`` and adds keyword-only choices of gamma and rescaling.
"""

from __future__ import annotations

import torch

from dropblock._checks import check_choice, check_positive_int, check_probability
from dropblock.gamma import clip_block, expected_drop_rate
from dropblock.masks import block_keep_mask, cutout_mask, resolve_gamma, spatial_dropout_mask
from dropblock.sampling import bernoulli_positions

_ZERO = torch.zeros(())

RESCALES = ("batch", "sample", "expected", "none")
"""How kept units are scaled up:
- ``batch``: by numel / kept over the whole batch (the paper and torchvision);
- ``sample``: by each sample's own numel / kept;
- ``expected``: by 1 / (1 - exact expected drop rate), known before the draw: one pass, no reduction;
- ``none``: not at all."""


def check_input(input: torch.Tensor) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a 4-D floating tensor, or ValueError."""
    if not isinstance(input, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating tensor, got dtype {input.dtype}")
    return tuple(input.shape)  # type: ignore[return-value]


def _apply(input: torch.Tensor, mask: torch.Tensor, inplace: bool) -> torch.Tensor:
    return input.mul_(mask) if inplace else input * mask


def drop_block2d(
    input: torch.Tensor,
    p: float,
    block_size: int,
    inplace: bool = False,
    eps: float = 1e-6,
    training: bool = True,
    *,
    gamma: str | float = "paper",
    rescale: str = "batch",
    shared_channels: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DropBlock (Ghiasi et al. 2018, Algorithm 1) on ``input`` (N, C, H, W); returns the same shape.

    Seeds fall with probability gamma where a whole block fits; each sample and channel has its
    own mask unless ``shared_channels``. A block larger than the map is clipped to it.
    ``gamma``: "paper" (Equation 1; realized drop rate below p), "exact" (expected drop rate
    exactly p) or a float. ``rescale``: one of RESCALES. Identity when not training or p == 0.
    """
    n, c, h, w = check_input(input)
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    check_choice(rescale, "rescale", RESCALES)
    if not training or p == 0.0:
        return input
    bh, bw = clip_block(block_size, h, w)
    g = resolve_gamma(gamma, p, block_size, h, w)
    planes_c = 1 if shared_channels else c
    with torch.no_grad():
        keep, _ = block_keep_mask(n * planes_c, h, w, bh, bw, g, device=input.device, generator=generator)
        keep = keep.view(n, planes_c, h, w)
        if rescale == "none":
            scale: float | torch.Tensor = 1.0
        elif rescale == "expected":
            scale = 1.0 / max(1.0 - expected_drop_rate(g, block_size, h, w), eps)
        elif rescale == "batch":
            scale = keep.numel() / (eps + float(torch.count_nonzero(keep)))
        else:  # per sample: a (N, 1, 1, 1) tensor
            kept = torch.count_nonzero(keep.view(n, -1), dim=1).to(torch.float32)
            scale = (keep[0].numel() / (eps + kept)).to(input.dtype).view(n, 1, 1, 1)
    return _masked_scale(input, keep, scale, inplace)


def _masked_scale(input: torch.Tensor, keep: torch.Tensor, scale: float | torch.Tensor, inplace: bool) -> torch.Tensor:
    """``input * keep * scale`` in one pass over the input (``keep`` bool, broadcastable)."""
    if inplace:
        return input.mul_(keep).mul_(scale)
    if isinstance(scale, torch.Tensor):
        return input * keep * scale
    return torch.addcmul(_ZERO.to(input.device, input.dtype), input, keep, value=scale)


def dropout(
    input: torch.Tensor, p: float, training: bool = True, inplace: bool = False, *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Element-wise dropout: each unit zeroed with probability p, kept units scaled by 1 / (1 - p)."""
    check_input(input)
    p = check_probability(p)
    if not training or p == 0.0:
        return input
    with torch.no_grad():
        mask = torch.full(input.shape, 1.0 / (1.0 - p), dtype=input.dtype, device=input.device)
        mask.view(-1).index_fill_(0, bernoulli_positions(mask.numel(), p, device=input.device, generator=generator), 0)
    return _apply(input, mask, inplace)


def spatial_dropout(
    input: torch.Tensor, p: float, training: bool = True, inplace: bool = False, *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Spatial dropout (nn.Dropout2d): whole channels zeroed with probability p, the rest scaled by 1 / (1 - p)."""
    check_input(input)
    p = check_probability(p)
    if not training or p == 0.0:
        return input
    with torch.no_grad():
        keep = spatial_dropout_mask(tuple(input.shape), p, device=input.device, generator=generator)
        mask = keep.to(input.dtype) / (1.0 - p)
    return _apply(input, mask, inplace)


def cutout(
    input: torch.Tensor, n_holes: int, length: int, training: bool = True, inplace: bool = False, *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cutout: ``n_holes`` squares of side ``length`` zeroed, one mask for all channels, no rescaling."""
    check_input(input)
    if not training:
        return input
    with torch.no_grad():
        keep, _ = cutout_mask(tuple(input.shape), n_holes, length, device=input.device, generator=generator)
        mask = keep.to(input.dtype)
    return _apply(input, mask, inplace)
