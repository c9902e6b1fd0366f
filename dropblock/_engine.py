"""DropBlock on real tensors: the input rule, which calls are traced, and the backends behind ``run``.

``functional`` (eager calls) and ``ops`` (the custom ops that traced calls become) both run DropBlock
through ``run`` here, which picks the backend (``dropblock.backends``): the fused Triton kernels
(``dropblock._triton``), or exact seed lists (C helper, NumPy or torch) whose blocks are then zeroed.
Every path is linear in the input with a mask drawn before it, so every backward pass is the same
map on the gradient, and is itself differentiable (double backward, ``gradgradcheck``).
"""

from __future__ import annotations

import torch

from dropblock.errors import UsageError
from dropblock import backends
from dropblock._plan import Plan, make_plan
from dropblock.masks import block_corners, block_indices, fill_blocks, union_size

TRACED_RNG = ("generator= and seed= cannot be used while torch.fx, torch.compile or torch.export traces "
              "drop_block2d (or on a tensor subclass that defines __torch_dispatch__): such masks come from "
              "torch's default generator (seed it with torch.manual_seed)")


def check_input(input: torch.Tensor) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a 4-D floating tensor, or ValueError."""
    if not isinstance(input, torch.Tensor):
        raise UsageError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise UsageError(f"input must be 4-D (N, C, H, W), got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise UsageError(f"input must be a floating tensor, got dtype {input.dtype}")
    return tuple(input.shape)  # type: ignore[return-value]


def tracing(input) -> bool:
    """Whether ``input`` has no data here to draw a mask for in Python: a torch.fx Proxy, a call under
    torch.compile or torch.export, or a tensor whose class defines ``__torch_dispatch__`` (fake and
    functional tensors while tracing, wrapper subclasses). Such calls go through the custom op
    (``dropblock.ops``). Plain subclasses (``as_subclass``, ``Parameter``) hold data: they run eagerly."""
    return (isinstance(input, torch.fx.Proxy) or torch.compiler.is_compiling()
            or type(input).__torch_dispatch__ is not torch.Tensor.__torch_dispatch__)


def without_values(input: torch.Tensor, inplace: bool) -> torch.Tensor:
    """What a regularizer returns for a meta tensor (shape, dtype and autograd, no values to mask):
    the input itself when ``inplace`` (marked as written), else a new meta tensor of its shape."""
    return input.mul_(1.0) if inplace else input.clone()


def batch_rescale(numel, kept, eps: float = 1e-6):
    """The training rescale of kept units, ``numel / (eps + kept)`` (the paper's and torchvision's).

    ``kept``: a count, or a tensor of counts (one per sample); eps keeps an all-dropped draw finite."""
    return numel / (eps + kept)


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
        scale = plan.scale(rescale) if kept is None else batch_rescale(input.numel(), kept, eps) if kept else 0.0
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
        kept = _rescale_mask(mask, h * w // (mask.shape[2] * mask.shape[3]), rescale, plan, eps)
    return multiply(input, mask, inplace), kept


def _rescale_mask(mask: torch.Tensor, unit: int, rescale: str, plan: Plan, eps: float):
    """Scale a dense 0/1 mask (N, C', H', W') in place as ``rescale`` says; returns the kept units it
    counted (an int for "batch", (N,) int64 for "sample", else None). ``unit``: map units per mask entry.
    A group with nothing kept gets scale 0 (it scales only zeros; a tiny eps could make it inf, and 0 * inf is NaN)."""
    if rescale == "batch":
        kept = int(mask.sum(dtype=torch.float64)) * unit
        mask.mul_(batch_rescale(mask.numel() * unit, kept, eps) if kept else 0.0)
        return kept
    if rescale == "sample":  # float32 or wider: an all-dropped sample's huge scale then meets only zeros
        kept = mask.sum(dim=(1, 2, 3), keepdim=True, dtype=torch.float64) * unit
        scale = torch.where(kept > 0, batch_rescale(mask[0].numel() * unit, kept, eps), 0.0)
        mask.mul_(scale.to(torch.promote_types(mask.dtype, torch.float32)))
        return kept.view(-1).to(torch.int64)
    if rescale == "expected":
        mask.mul_(plan.expected_scale)
    return None


def _scaled_with_blocks_zeroed(t: torch.Tensor, corners, scale: float, bh: int, bw: int) -> torch.Tensor:
    """A new contiguous ``t * scale`` (t contiguous) with the blocks at ``corners`` zeroed."""
    out = t * scale if scale != 1.0 else t.clone(memory_format=torch.contiguous_format)
    fill_blocks(out.view(-1), corners, t.shape[-1], bh, bw, 0)
    return out


class _ZeroBlocks(torch.autograd.Function):
    """``input * scale`` with the blocks at ``corners`` zeroed. A linear map that is its own adjoint: the
    backward pass applies it to the gradient through this Function again, so it differentiates any
    number of times (the second derivative of a linear map is 0, and gradgradcheck sees that).

    ``corners`` (NumPy array or integer tensor) never requires grad, so it is kept on ``ctx`` as is."""

    @staticmethod
    def forward(ctx, input, corners, scale, bh, bw):  # noqa: D102
        ctx.corners, ctx.scale, ctx.bh, ctx.bw = corners, scale, bh, bw
        return _scaled_with_blocks_zeroed(input, corners, scale, bh, bw)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return _ZeroBlocks.apply(grad.contiguous(), ctx.corners, ctx.scale, ctx.bh, ctx.bw), None, None, None, None


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


def multiply(input: torch.Tensor, mask: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``input * mask``, in place when asked: the one home of that choice for every regularizer here."""
    return input.mul_(mask) if inplace else input * mask
