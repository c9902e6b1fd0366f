"""Functional DropBlock, dropout, spatial dropout and Cutout on (N, C, H, W) tensors.

``drop_block2d(input, p, block_size, inplace=False, eps=1e-6, training=True)`` is call-compatible
with ``torchvision.ops.drop_block2d`` and adds keyword-only choices of gamma and rescaling.

Where it runs: ``dropblock._engine`` runs eager calls in the backend ``dropblock.backends`` picks
(fused Triton kernels, or exact seed lists in C, NumPy or torch). While torch.fx, torch.compile or
torch.export traces a call, it becomes the custom op ``torch.ops.dropblock.drop_block2d``
(``dropblock.ops``). A meta tensor gives a meta tensor of its shape. Every form here is
differentiable any number of times.
"""

from __future__ import annotations

import torch

from dropblock.errors import UsageError
from dropblock import ops
from dropblock._checks import (
    check_choice,
    check_eps,
    check_gamma,
    check_positive_int,
    check_probability,
    check_seed,
)
from dropblock._engine import (  # noqa: F401 (batch_rescale: public here, used by callers of this module)
    TRACED_RNG,
    batch_rescale,
    check_input,
    multiply,
    run,
    tracing,
    without_values,
)
from dropblock.gamma import GAMMA_MODES
from dropblock.masks import cutout_mask, spatial_dropout_mask
from dropblock.rng import make_generator
from dropblock.sampling import bernoulli_positions

RESCALES = ("batch", "sample", "expected", "none")
"""How kept units are scaled up:
- ``batch``: by numel / (eps + kept) of the mask over the whole batch (the paper and torchvision; a
  mask shared by the channels counts its (N, 1, H, W) units);
- ``sample``: by each sample's own numel / (eps + kept);
- ``expected``: by 1 / (1 - exact expected drop rate), known before the draw: one pass, no reduction;
- ``none``: not at all.
A group with nothing kept is all zeros whatever eps is."""


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
    exactly p) or a float. ``rescale``: one of RESCALES. ``eps``: a finite number > 0.
    Identity when not training or p == 0. ``generator`` (on the input's device) or ``seed`` (an
    integer in [0, 2**64 - 1]) makes the mask reproducible.
    """
    if not isinstance(input, torch.fx.Proxy):  # a symbolic trace has no tensor to check yet
        check_input(input)
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    eps = check_eps(eps)
    check_choice(rescale, "rescale", RESCALES)
    check_gamma(gamma, GAMMA_MODES)
    if seed is not None:
        check_seed(seed)
    if generator is None and seed is not None:
        if tracing(input):
            raise UsageError(TRACED_RNG)
        if input.device.type != "meta":  # nothing to draw on a meta tensor
            generator = make_generator(seed, input.device)
    return _drop_block2d(input, p, block_size, inplace, eps, training, gamma, rescale, shared_channels, generator)


def _drop_block2d(input, p: float, block_size: int, inplace: bool, eps: float, training: bool, gamma: str | float,
                  rescale: str, shared_channels: bool, generator: torch.Generator | None) -> torch.Tensor:
    """drop_block2d on checked arguments (DropBlock2d.forward calls this)."""
    if tracing(input):
        if generator is not None:
            raise UsageError(TRACED_RNG)
        return ops.drop_block2d(input, p, block_size, inplace, eps, training, gamma, rescale, shared_channels)
    if not training or p == 0.0 or input.numel() == 0:
        return input
    if input.device.type == "meta":
        return without_values(input, inplace)
    return run(input, p, block_size, eps, gamma, rescale, shared_channels, generator, inplace)[0]


def _drop_units(input: torch.Tensor, p: float, training: bool, inplace: bool, scaled_keep) -> torch.Tensor:
    """``input`` times ``scaled_keep(p)`` (a mask broadcastable to it: 1 / (1 - p) where kept, 0 where
    dropped); identity when not training or p == 0."""
    check_input(input)
    p = check_probability(p)
    if not training or p == 0.0:
        return input
    if input.device.type == "meta":
        return without_values(input, inplace)
    with torch.no_grad():
        mask = scaled_keep(p)
    return multiply(input, mask, inplace)


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
    check_positive_int(n_holes, "n_holes")
    check_positive_int(length, "length")
    if not training:
        return input
    if input.device.type == "meta":
        return without_values(input, inplace)
    with torch.no_grad():
        keep, _ = cutout_mask(tuple(input.shape), n_holes, length, device=input.device, generator=generator)
        mask = keep.to(input.dtype)
    return multiply(input, mask, inplace)
