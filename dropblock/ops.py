"""DropBlock as torch.library custom ops: what torch.fx, torch.compile and torch.export see of it.

NumPy, the C helper, host-side counts and Triton launches cannot be traced, so a traced call of
``drop_block2d`` (or ``DropBlock2d``) becomes one opaque node:

``torch.ops.dropblock.drop_block2d(x, p, block_size, gamma, gamma_value, rescale, shared_channels, eps)``
    -> (out, rng_state, kept)

It draws from torch's default generator for x's device (``torch.manual_seed`` makes it
reproducible, and for the same seed it gives the same mask as an eager call) with the backend
that ``dropblock.backends`` picks. ``gamma`` is "paper" or "exact", or "" to use ``gamma_value``.
``rng_state`` (CPU uint8) is the generator's state before the draw; ``kept`` (int64, x's device)
holds the kept units per rescale group ((N,) for "sample", else (1,); zeros where nothing counted).

DropBlock is linear in x with a mask that does not depend on x, so its backward pass is the same
map on the gradient: ``torch.ops.dropblock.drop_block2d_replay(grad, rng_state, kept, ...)`` draws
the mask again from the saved state. Nothing mask-sized is saved. A program exported with these
ops needs ``import dropblock.ops`` in the process that loads it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dropblock._engine import check_input, run
from dropblock.rng import default_generator


def _like(x: Tensor, out: Tensor) -> Tensor:
    """``out`` with the strides of ``torch.empty_like(x)``, which the fake implementations promise."""
    want = torch.empty_like(x)
    return out if out.stride() == want.stride() else want.copy_(out)


def _kept_tensor(kept, x: Tensor, rescale: str) -> Tensor:
    size = x.shape[0] if rescale == "sample" else 1
    if kept is None:
        return torch.zeros(size, dtype=torch.int64, device=x.device)
    return torch.as_tensor(kept, device=x.device).to(torch.int64).reshape(size)


def _apply(x: Tensor, gen: torch.Generator, p: float, block_size: int, gamma: str, gamma_value: float, rescale: str,
           shared_channels: bool, eps: float, kept: Tensor | None = None) -> tuple[Tensor, object]:
    if x.numel() == 0:
        return x.clone(), None
    with torch.no_grad():
        counted = kept if rescale in ("batch", "sample") else None
        out, kept = run(x, p, block_size, eps, gamma or gamma_value, rescale, shared_channels, gen, False, counted)
    return _like(x, out), kept


@torch.library.custom_op("dropblock::drop_block2d", mutates_args=(), tags=(torch.Tag.nondeterministic_seeded,))
def _drop_block2d_op(x: Tensor, p: float, block_size: int, gamma: str, gamma_value: float, rescale: str,
                     shared_channels: bool, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    check_input(x)  # a traced graph may be run on any input
    gen = default_generator(x.device)
    state = gen.get_state()
    out, kept = _apply(x, gen, p, block_size, gamma, gamma_value, rescale, shared_channels, eps)
    return out, state, _kept_tensor(kept, x, rescale)


@_drop_block2d_op.register_fake
def _(x, p, block_size, gamma, gamma_value, rescale, shared_channels, eps):
    state = torch.empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.uint8)
    kept = x.new_empty(x.shape[0] if rescale == "sample" else 1, dtype=torch.int64)
    return torch.empty_like(x), state, kept


@torch.library.custom_op("dropblock::drop_block2d_replay", mutates_args=())
def _replay_op(grad: Tensor, rng_state: Tensor, kept: Tensor, p: float, block_size: int, gamma: str,
               gamma_value: float, rescale: str, shared_channels: bool, eps: float) -> Tensor:
    gen = torch.Generator(device=grad.device)
    gen.set_state(rng_state)
    return _apply(grad, gen, p, block_size, gamma, gamma_value, rescale, shared_channels, eps, kept)[0]


@_replay_op.register_fake
def _(grad, rng_state, kept, p, block_size, gamma, gamma_value, rescale, shared_channels, eps):
    return torch.empty_like(grad)


def _setup_forward(ctx, inputs, output):
    ctx.args = inputs[1:]
    ctx.save_for_backward(output[1], output[2])


def _backward_forward(ctx, grad, _state_grad, _kept_grad):
    state, kept = ctx.saved_tensors
    return (torch.ops.dropblock.drop_block2d_replay(grad, state, kept, *ctx.args), *([None] * len(ctx.args)))


def _setup_replay(ctx, inputs, output):
    ctx.args = inputs[3:]
    ctx.save_for_backward(inputs[1], inputs[2])


def _backward_replay(ctx, grad):
    state, kept = ctx.saved_tensors
    return (torch.ops.dropblock.drop_block2d_replay(grad, state, kept, *ctx.args), None, None,
            *([None] * len(ctx.args)))


_drop_block2d_op.register_autograd(_backward_forward, setup_context=_setup_forward)
_replay_op.register_autograd(_backward_replay, setup_context=_setup_replay)


def drop_block2d(input: Tensor, p: float, block_size: int, inplace: bool, eps: float, training: bool,
                 gamma: str | float, rescale: str, shared_channels: bool) -> Tensor:
    """The traced form of ``functional.drop_block2d`` on checked arguments. torch.fx records this
    function as one node (``torch.fx.wrap``), in training and in eval mode, named drop_block2d as
    torchvision's is; torch.compile and torch.export trace into it and see the custom op."""
    if not training or p == 0.0:
        return input
    mode, value = (gamma, 0.0) if isinstance(gamma, str) else ("", float(gamma))
    out = torch.ops.dropblock.drop_block2d(input, p, block_size, mode, value, rescale, shared_channels, eps)[0]
    return input.copy_(out) if inplace else out


torch.fx.wrap("drop_block2d")
