"""Exact Bernoulli(gamma) seeds at a cost that grows with the number of seeds, not of positions.

The gaps between successes of a Bernoulli(gamma) sequence are independent Geometric(gamma):
``floor(log U / log(1 - gamma))`` with U uniform on (0, 1]. Summing them gives exactly the
positions an i.i.d. Bernoulli draw at every position would give (no replacement, no
approximation), in O(gamma * n) time and memory.
"""

from __future__ import annotations

import math

import torch


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed``; None when seed is None (torch's default RNG)."""
    if seed is None:
        return None
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def _draw_size(left: int, gamma: float) -> int:
    """Gaps to draw at once: enough to cover ``left`` positions in all but ~1e-9 of draws."""
    m = left * gamma
    return int(m + 6.0 * math.sqrt(m * (1.0 - gamma)) + 16)


def bernoulli_positions(
    n: int,
    gamma: float,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sorted flat indices in ``[0, n)`` of an i.i.d. Bernoulli(gamma) draw, int64, shape (K,).

    K ~ Binomial(n, gamma). Cost O(gamma * n + 1).
    """
    device = torch.device(device)
    if n <= 0 or gamma <= 0.0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if gamma >= 1.0:
        return torch.arange(n, dtype=torch.int64, device=device)
    log_q = math.log1p(-gamma)
    chunks = []
    start = 0  # the next position not yet decided
    while start < n:
        left = n - start
        draw = _draw_size(left, gamma)
        u = torch.rand(draw, dtype=torch.float64, device=device, generator=generator)
        gaps = torch.floor(torch.log1p(-u) / log_q)  # 1 - u is uniform on (0, 1]
        gaps.clamp_(max=float(n))  # keep the cumulative sum in range; any gap >= n ends the draw
        pos = torch.cumsum(gaps.to(torch.int64) + 1, 0) + (start - 1)
        last = int(pos[-1])  # one sync per chunk; almost always one chunk
        if last >= n:
            pos = pos[pos < n]
            chunks.append(pos)
            break
        chunks.append(pos)
        start = last + 1
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)
