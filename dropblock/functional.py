"""Functional DropBlock, dropout, spatial dropout and Cutout on (N, C, H, W) tensors.

``drop_block2d(input, p, block_size, inplace=False, eps=1e-6, training=True)`` is call-compatible
with ``torchvision.ops.drop_block2d`` and adds keyword-only choices of gamma and rescaling.

Where it runs: ``dropblock.backends`` picks fused Triton kernels (``dropblock._triton``) or the exact
seed lists below (C helper, NumPy or torch). While torch.fx, torch.compile or torch.export traces a
call, it becomes the custom op ``torch.ops.dropblock.drop_block2d`` (``dropblock.ops``).
"""

from __future__ import annotations

import torch

from dropblock import backends, ops
from dropblock._checks import check_choice, check_gamma, check_positive_int, check_probability
from dropblock._plan import Plan, make_plan
from dropblock.gamma import GAMMA_MODES
from dropblock.masks import (
    block_corners,
    block_indices,
    cutout_mask,
    fill_blocks,
    spatial_dropout_mask,
    union_size,
)
from dropblock.sampling import bernoulli_positions, make_generator

RESCALES = ("batch", "sample", "expected", "none")
"""How kept units are scaled up:
- ``batch``: by numel / (eps + kept) of the mask over the whole batch (the paper and torchvision; a
  mask shared by the channels counts its (N, 1, H, W) units);
- ``sample``: by each sample's own numel / (eps + kept);
- ``expected``: by 1 / (1 - exact expected drop rate), known before the draw: one pass, no reduction;
- ``none``: not at all."""

TRACED_RNG = ("generator= and seed= cannot be used while torch.fx, torch.compile or torch.export traces "
              "drop_block2d: traced masks come from torch's default generator (seed it with torch.manual_seed)")


def check_input(input: torch.Tensor) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a 4-D floating tensor, or ValueError."""
    if not isinstance(input, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating tensor, got dtype {input.dtype}")
    return tuple(input.shape)  # type: ignore[return-value]


def batch_rescale(numel, kept, eps: float = 1e-6):
    """The training rescale of kept units, ``numel / (eps + kept)`` (the paper's and torchvision's).

    ``kept``: a count, or a tensor of counts (one per sample); eps keeps an all-dropped draw finite."""
    return numel / (eps + kept)


def tracing(input) -> bool:
    """Whether torch.fx, torch.compile or torch.export is tracing a call on ``input``."""
    return (isinstance(input, torch.fx.Proxy) or torch.compiler.is_compiling()
            or type(input) not in (torch.Tensor, torch.nn.Parameter))


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
    if not isinstance(input, torch.fx.Proxy):  # a symbolic trace has no tensor to check yet
        check_input(input)
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    check_choice(rescale, "rescale", RESCALES)
    check_gamma(gamma, GAMMA_MODES)
    if generator is None and seed is not None:
        if tracing(input):
            raise ValueError(TRACED_RNG)
        generator = make_generator(seed, input.device)
    return _drop_block2d(input, p, block_size, inplace, eps, training, gamma, rescale, shared_channels, generator)


def _drop_block2d(input, p: float, block_size: int, inplace: bool, eps: float, training: bool, gamma: str | float,
                  rescale: str, shared_channels: bool, generator: torch.Generator | None) -> torch.Tensor:
    """drop_block2d on checked arguments (DropBlock2d.forward calls this)."""
    if tracing(input):
        if generator is not None:
            raise ValueError(TRACED_RNG)
        return ops.drop_block2d(input, p, block_size, inplace, eps, training, gamma, rescale, shared_channels)
    if not training or p == 0.0 or input.numel() == 0:
        return input
    return run(input, p, block_size, eps, gamma, rescale, shared_channels, generator, inplace)[0]


def run(input: torch.Tensor, p: float, block_size: int, eps: float, gamma: str | float, rescale: str,
        shared_channels: bool, generator: torch.Generator | None, inplace: bool,
        kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | int | None]:
    """DropBlock on a real tensor in the backend ``dropblock.backends`` picks; returns (output, kept).

    kept: the kept units per rescale group where the rescale counted them (None otherwise). Given
    ``kept`` from an earlier draw of the same generator state, Triton skips its count (the seed-list
    path replays the draw and recounts)."""
    n, c, h, w = input.shape
    plan = make_plan(p, block_size, h, w, gamma, eps)
    if backends.for_device(input.device) == "triton":
        from dropblock import _triton

        return _triton.drop_block2d(input, plan, rescale, shared_channels, eps, generator, inplace, kept)
    return _drop_with_seed_lists(input, plan, rescale, shared_channels, eps, generator, inplace)


def _drop_with_seed_lists(input: torch.Tensor, plan: Plan, rescale: str, shared_channels: bool, eps: float,
                          generator: torch.Generator | None, inplace: bool):
    """The c, numpy and torch backends: exact seed corners, then blocks zeroed (or a dense mask)."""
    n, c, h, w = input.shape
    bh, bw = plan.bh, plan.bw
    planes_c = 1 if shared_channels else c
    corners = block_corners(n * planes_c, h, w, bh, bw, plan.gamma, device=input.device, generator=generator)
    if planes_c == c and rescale != "sample" and input.is_contiguous():
        kept = input.numel() - union_size(corners, h, w, bh, bw) if rescale == "batch" else None
        scale = batch_rescale(input.numel(), kept, eps) if rescale == "batch" else plan.scale(rescale)
        return _drop_sparse(input, corners, scale, bh, bw, inplace), kept
    with torch.no_grad():  # shared masks, per-sample rescale, other memory layouts: a dense mask
        if bh == h and bw == w:  # every block is its whole plane: a (N, C', 1, 1) mask says it all
            mask = torch.ones(n * planes_c, dtype=input.dtype, device=input.device)
            fill_blocks(mask, corners // (h * w), 1, 1, 1, 0)
            mask = mask.view(n, planes_c, 1, 1)
        else:
            mask = torch.ones((n * planes_c, h, w), dtype=input.dtype, device=input.device)
            fill_blocks(mask.view(-1), corners, w, bh, bw, 0)
            mask = mask.view(n, planes_c, h, w)
        kept, unit = None, h * w // (mask.shape[2] * mask.shape[3])  # mask units per entry: counts stay in units
        if rescale == "batch":
            kept = int(mask.sum(dtype=torch.float64)) * unit
            mask.mul_(batch_rescale(mask.numel() * unit, kept, eps))
        elif rescale == "sample":  # float32 or wider: an all-dropped sample's huge scale then meets only zeros
            kept = mask.sum(dim=(1, 2, 3), keepdim=True, dtype=torch.float64) * unit
            mask.mul_(batch_rescale(mask[0].numel() * unit, kept, eps).to(torch.promote_types(input.dtype, torch.float32)))
            kept = kept.view(-1).to(torch.int64)
        elif rescale == "expected":
            mask.mul_(plan.expected_scale)
    return _multiply(input, mask, inplace), kept


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


def _multiply(input: torch.Tensor, mask: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``input * mask``, in place when asked: the one home of that choice for every regularizer here."""
    return input.mul_(mask) if inplace else input * mask


def _drop_units(input: torch.Tensor, p: float, training: bool, inplace: bool, scaled_keep) -> torch.Tensor:
    """``input`` times ``scaled_keep(p)`` (a mask broadcastable to it: 1 / (1 - p) where kept, 0 where
    dropped); identity when not training or p == 0."""
    check_input(input)
    p = check_probability(p)
    if not training or p == 0.0:
        return input
    with torch.no_grad():
        mask = scaled_keep(p)
    return _multiply(input, mask, inplace)


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
    return _multiply(input, mask, inplace)
