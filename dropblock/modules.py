"""nn.Module forms: DropBlock2d (a drop-in for torchvision.ops.DropBlock2d), its linear schedule,
element-wise and spatial dropout, and Cutout. All are the identity in eval mode."""

from __future__ import annotations

import torch
from torch import nn

from dropblock.errors import UsageError
from dropblock import functional as Fd
from dropblock._checks import check_choice, check_eps, check_gamma, check_positive_int, check_probability, check_seed
from dropblock.gamma import linear_keep_prob
from dropblock.gamma import GAMMA_MODES
from dropblock.rng import make_generator


class DropBlock2d(nn.Module):
    """DropBlock on (N, C, H, W) inputs, as ``torchvision.ops.DropBlock2d(p, block_size, inplace, eps)``.

    Keyword-only extras: ``gamma`` ("paper" | "exact" | float), ``rescale`` ("batch" | "sample" |
    "expected" | "none"), ``shared_channels`` (one mask for all channels of a sample), and for
    reproducible masks either ``generator`` (a torch.Generator on the input's device) or ``seed``
    (an integer in [0, 2**64 - 1]: a generator seeded with it is made on the first input's device and
    advanced by every call). ``eps``: a finite number > 0.
    """

    def __init__(
        self, p: float, block_size: int, inplace: bool = False, eps: float = 1e-6, *,
        gamma: str | float = "paper", rescale: str = "batch", shared_channels: bool = False,
        generator: torch.Generator | None = None, seed: int | None = None,
    ) -> None:
        super().__init__()
        if generator is not None and seed is not None:
            raise UsageError("give generator or seed, not both")
        self.seed = None if seed is None else check_seed(seed)
        self.p = check_probability(p)
        self.block_size = check_positive_int(block_size, "block_size")
        self.inplace = inplace
        self.eps = check_eps(eps)
        self.gamma = check_gamma(gamma, GAMMA_MODES)
        self.rescale = check_choice(rescale, "rescale", Fd.RESCALES)
        self.shared_channels = shared_channels
        self.generator = generator

    def _drop_prob(self) -> float:
        return self.p

    def _generator_for(self, input: torch.Tensor) -> torch.Generator | None:
        if self.seed is not None and (self.generator is None or self.generator.device != input.device):
            if Fd.tracing(input):
                raise UsageError(Fd.TRACED_RNG)
            if input.device.type == "meta":  # nothing is drawn on a meta tensor
                return None
            self.generator = make_generator(self.seed, input.device)
        return self.generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Arguments were checked in __init__; only the input is checked here."""
        if not isinstance(input, torch.fx.Proxy):
            Fd.check_input(input)
        return Fd._drop_block2d(input, self._drop_prob(), self.block_size, self.inplace, self.eps, self.training,
                                self.gamma, self.rescale, self.shared_channels, self._generator_for(input))

    def extra_repr(self) -> str:
        return (
            f"p={self.p}, block_size={self.block_size}, inplace={self.inplace}, gamma={self.gamma!r}, "
            f"rescale={self.rescale!r}, shared_channels={self.shared_channels}"
        )


class ScheduledDropBlock2d(DropBlock2d):
    """DropBlock whose keep_prob falls linearly from ``start_keep_prob`` to ``1 - p`` over ``steps`` steps.

    Call ``step()`` once per training step. The step count is a buffer, so it survives
    ``state_dict()`` / ``load_state_dict()`` (and moves with ``.to(device)``).
    """

    def __init__(
        self, p: float, block_size: int, steps: int, inplace: bool = False, eps: float = 1e-6, *,
        start_keep_prob: float = 1.0, **kwargs,
    ) -> None:
        super().__init__(p, block_size, inplace, eps, **kwargs)
        self.steps = check_positive_int(steps, "steps")
        if not 0.0 < start_keep_prob <= 1.0:
            raise UsageError(f"start_keep_prob must be in (0, 1], got {start_keep_prob!r}")
        self.start_keep_prob = float(start_keep_prob)
        self.register_buffer("step_count", torch.zeros((), dtype=torch.int64))

    @property
    def keep_prob(self) -> float:
        """The keep_prob in force at the current step."""
        return linear_keep_prob(int(self.step_count), self.steps, 1.0 - self.p, self.start_keep_prob)

    def step(self) -> None:
        """Advance the schedule by one training step."""
        self.step_count += 1

    def _drop_prob(self) -> float:
        return max(0.0, 1.0 - self.keep_prob)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, steps={self.steps}, start_keep_prob={self.start_keep_prob}"


class Dropout(nn.Module):
    """Element-wise dropout with an optional generator (same maths as nn.Dropout)."""

    def __init__(self, p: float = 0.5, inplace: bool = False, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = check_probability(p)
        self.inplace = inplace
        self.generator = generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return Fd.dropout(input, self.p, self.training, self.inplace, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class SpatialDropout2d(Dropout):
    """Spatial dropout: whole channels dropped with probability p (same maths as nn.Dropout2d)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return Fd.spatial_dropout(input, self.p, self.training, self.inplace, generator=self.generator)


class Cutout(nn.Module):
    """Cutout (DeVries & Taylor 2017): ``n_holes`` squares of side ``length`` zeroed in training."""

    def __init__(
        self, n_holes: int = 1, length: int = 16, inplace: bool = False, *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_holes = check_positive_int(n_holes, "n_holes")
        self.length = check_positive_int(length, "length")
        self.inplace = inplace
        self.generator = generator

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return Fd.cutout(input, self.n_holes, self.length, self.training, self.inplace, generator=self.generator)

    def extra_repr(self) -> str:
        return f"n_holes={self.n_holes}, length={self.length}"
