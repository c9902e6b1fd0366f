"""Functional DropBlock, dropout, spatial dropout and Cutout on (N, C, H, W) tensors.

``drop_block2d(input, p, block_size, inplace=False, eps=1e-6, training=True)`` is call-compatible
with ``torchvision.ops.drop_block2d`` and adds keyword-only choices of gamma and rescaling.
"""

from __future__ import annotations

import torch

from dropblock._checks import check_choice, check_positive_int, check_probability
from dropblock.gamma import clip_block, expected_drop_rate
from dropblock.masks import (
    block_corners,
    block_indices,
    cutout_mask,
    fill_blocks,
    resolve_gamma,
    spatial_dropout_mask,
    union_size,
)
from dropblock.sampling import bernoulli_positions, make_generator

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
    seed: int | None = None,
) -> torch.Tensor:
    """DropBlock (Ghiasi et al. 2018, Algorithm 1) on ``input`` (N, C, H, W); returns the same shape.

    Seeds fall with probability gamma where a whole block fits; each sample and channel has its
    own mask unless ``shared_channels``. A block larger than the map is clipped to it.
    ``gamma``: "paper" (Equation 1; realized drop rate below p), "exact" (expected drop rate
    exactly p) or a float. ``rescale``: one of RESCALES. Identity when not training or p == 0.
    ``generator`` (on the input's device) or ``seed`` makes the mask reproducible.
    """
    n, c, h, w = check_input(input)
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    check_choice(rescale, "rescale", RESCALES)
    if not training or p == 0.0:
        return input
    bh, bw = clip_block(block_size, h, w)
    g = resolve_gamma(gamma, p, block_size, h, w)
    if generator is None and seed is not None:
        generator = make_generator(seed, input.device)
    planes_c = 1 if shared_channels else c
    corners = block_corners(n * planes_c, h, w, bh, bw, g, device=input.device, generator=generator)
    expected_scale = 1.0
    if rescale == "expected":
        expected_scale = 1.0 / max(1.0 - expected_drop_rate(g, block_size, h, w), eps)
    if planes_c == c and rescale != "sample" and input.is_contiguous():
        dropped = union_size(corners, h, w, bh, bw) if rescale == "batch" else 0
        scale = _scale_for(rescale, input.numel(), dropped, expected_scale, eps)
        return _drop_sparse(input, corners, scale, bh, bw, inplace)
    with torch.no_grad():  # shared masks, per-sample rescale, other memory layouts: a dense mask
        if bh == h and bw == w:  # every block is its whole plane: a (N, C', 1, 1) mask says it all
            mask = torch.ones(n * planes_c, dtype=input.dtype, device=input.device)
            fill_blocks(mask, corners // (h * w), 1, 1, 1, 0)
            mask = mask.view(n, planes_c, 1, 1)
        else:
            mask = torch.ones((n * planes_c, h, w), dtype=input.dtype, device=input.device)
            fill_blocks(mask.view(-1), corners, w, bh, bw, 0)
            mask = mask.view(n, planes_c, h, w)
        if rescale == "batch":
            mask.mul_(mask.numel() / (eps + float(mask.sum(dtype=torch.float32))))
        elif rescale == "sample":
            kept = mask.sum(dim=(1, 2, 3), keepdim=True, dtype=torch.float32)
            mask.mul_((mask[0].numel() / (eps + kept)).to(input.dtype))
        elif rescale == "expected":
            mask.mul_(expected_scale)
    return input.mul_(mask) if inplace else input * mask


def _scale_for(rescale: str, numel: int, dropped: int, expected_scale: float, eps: float) -> float:
    if rescale == "batch":
        return numel / (eps + numel - dropped)
    return expected_scale  # 1.0 for "none"


def _scaled_with_blocks_zeroed(t: torch.Tensor, corners, scale: float, bh: int, bw: int) -> torch.Tensor:
    """A new contiguous ``t * scale`` with the blocks at ``corners`` zeroed."""
    out = t * scale if scale != 1.0 else t.clone(memory_format=torch.contiguous_format)
    fill_blocks(out.view(-1), corners, t.shape[-1], bh, bw, 0)
    return out


class _ZeroBlocks(torch.autograd.Function):
    """``input * scale`` with the blocks at ``corners`` zeroed; the backward pass does the same to the gradient.

    ``corners`` (NumPy array or integer tensor) never requires grad, so it is kept on ``ctx`` as is."""

    @staticmethod
    def forward(ctx, input, corners, scale, bh, bw):  # noqa: D102
        ctx.corners, ctx.scale, ctx.bh, ctx.bw = corners, scale, bh, bw
        return _scaled_with_blocks_zeroed(input, corners, scale, bh, bw)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: D102
        out = _scaled_with_blocks_zeroed(grad.contiguous(), ctx.corners, ctx.scale, ctx.bh, ctx.bw)
        return out, None, None, None, None


def _drop_sparse(input: torch.Tensor, corners, scale: float, bh: int, bw: int, inplace: bool):
    """Per-channel masks on a contiguous input: scale everything in one pass, then zero only the dropped
    blocks (about p * numel writes). No mask is materialized."""
    tracked = torch.is_grad_enabled() and input.requires_grad
    if not inplace:
        if tracked:
            return _ZeroBlocks.apply(input, corners, scale, bh, bw)
        return _scaled_with_blocks_zeroed(input, corners, scale, bh, bw)
    out = input if scale == 1.0 else input.mul_(scale)
    if tracked:  # autograd must see the in-place fill
        index = block_indices(torch.as_tensor(corners, device=input.device), input.shape[-1], bh, bw)
        out.view(-1).index_fill_(0, index, 0)
    else:
        fill_blocks(out.view(-1), corners, input.shape[-1], bh, bw, 0)
        torch.autograd.graph.increment_version(out)  # the fill may bypass torch; saved copies must see it
    return out


def _drop_units(input: torch.Tensor, p: float, training: bool, inplace: bool, scaled_keep) -> torch.Tensor:
    """``input`` times ``scaled_keep(p)`` (a mask broadcastable to it: 1 / (1 - p) where kept, 0 where
    dropped); identity when not training or p == 0."""
    check_input(input)
    p = check_probability(p)
    if not training or p == 0.0:
        return input
    with torch.no_grad():
        mask = scaled_keep(p)
    return _apply(input, mask, inplace)


def dropout(
    input: torch.Tensor, p: float, training: bool = True, inplace: bool = False, *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Element-wise dropout: each unit zeroed with probability p, kept units scaled by 1 / (1 - p)."""
    def scaled_keep(p: float) -> torch.Tensor:
        mask = torch.full(input.shape, 1.0 / (1.0 - p), dtype=input.dtype, device=input.device)
        mask.view(-1).index_fill_(0, bernoulli_positions(mask.numel(), p, device=input.device, generator=generator), 0)
        return mask

    return _drop_units(input, p, training, inplace, scaled_keep)


def spatial_dropout(
    input: torch.Tensor, p: float, training: bool = True, inplace: bool = False, *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Spatial dropout (nn.Dropout2d): whole channels zeroed with probability p, the rest scaled by 1 / (1 - p)."""
    def scaled_keep(p: float) -> torch.Tensor:
        keep = spatial_dropout_mask(tuple(input.shape), p, device=input.device, generator=generator)
        return keep.to(input.dtype) / (1.0 - p)

    return _drop_units(input, p, training, inplace, scaled_keep)


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
