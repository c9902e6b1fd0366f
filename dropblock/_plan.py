"""What one DropBlock call on an H x W map needs from the gamma math, resolved once per setting.

The training loop calls DropBlock with the same (p, block size, map size, gamma) at every step, so
the plan is cached: a forward pass pays one dictionary lookup for the gamma math, whose own argument
checks then run once per setting instead of at every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from dropblock.gamma import clip_block, expected_drop_rate
from dropblock.gamma import resolve_gamma


@dataclass(frozen=True)
class Plan:
    """bh, bw: the block after clipping to the map; gamma: the seed probability;
    expected_scale: 1 / (1 - exact expected drop rate), floored at eps in the denominator; 0 where
    every unit is dropped for sure (gamma 1), as it then scales only zeros."""

    bh: int
    bw: int
    gamma: float
    expected_scale: float

    def scale(self, rescale: str) -> float:
        """The scale known before the draw: ``expected_scale`` for "expected", else 1."""
        return self.expected_scale if rescale == "expected" else 1.0


@lru_cache(maxsize=4096)
def make_plan(p: float, block_size: int, height: int, width: int, gamma: str | float, eps: float) -> Plan:
    """The plan for validated arguments (the public functions check them first)."""
    bh, bw = clip_block(block_size, height, width)
    g = resolve_gamma(gamma, p, block_size, height, width)
    rate = expected_drop_rate(g, block_size, height, width)
    return Plan(bh, bw, g, 1.0 / max(1.0 - rate, eps) if rate < 1.0 else 0.0)
