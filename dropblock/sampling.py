"""Exact Bernoulli(gamma) seeds at a cost that grows with the number of seeds, not of positions.

The gaps between successes of a Bernoulli(gamma) sequence are independent Geometric(gamma):
``floor(log U / log(1 - gamma))`` with U uniform on [0, 1) (float64, so the discretization is
2^-53). Summing them gives exactly the positions an i.i.d. Bernoulli draw at every position would
give (no replacement, no approximation), in O(gamma * n) time and memory.

On the CPU the integer bookkeeping runs in the C helper (``dropblock._cblocks``), or in NumPy where
it was not compiled: either costs a fraction of torch's per-call overhead on arrays of a few
thousand entries. Elsewhere (and on the CPU with ``DROPBLOCK_BACKEND=torch``) it runs in torch
tensor ops. The uniforms always come from torch, so ``generator`` and ``torch.manual_seed`` make
draws reproducible as usual, and all three give the same draw for the same generator state.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dropblock import _native, backends


def _draw_size(left: int, gamma: float) -> int:
    """Gaps to draw at once: enough to cover ``left`` positions in all but ~1e-9 of draws."""
    m = left * gamma
    return int(m + 6.0 * math.sqrt(m * (1.0 - gamma)) + 16)


def _log_uniforms(draw: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """log U for ``draw`` uniforms U on [0, 1) (float64). Divided by log(1 - gamma) and floored, each is a
    Geometric(gamma) failure count; U = 0 (probability 2^-53) gives +inf, which callers clamp to "past the end"."""
    u = torch.rand(draw, dtype=torch.float64, device=device, generator=generator)
    return torch.log(u, out=u)


def grid_to_map(seeds, height: int, width: int, bh: int, bw: int):
    """Flat index into the (planes, H, W) map of the top-left corner of each seed's bh x bw block, shape (K,).

    ``seeds``: flat indices into the (planes, H - bh + 1, W - bw + 1) seed grid, a tensor or a NumPy
    array (the result is the same kind)."""
    hs, ws = height - bh + 1, width - bw + 1
    if hs == height and ws == width:  # 1 x 1 blocks: the grid is the map
        return seeds
    plane, rest = seeds // (hs * ws), seeds % (hs * ws)
    return plane * (height * width) + (rest // ws) * width + rest % ws


def positions_array(
    n: int, gamma: float, *, device: torch.device, generator: torch.Generator | None = None,
    blocks: tuple[int, int, int, int] | None = None,
) -> np.ndarray | torch.Tensor:
    """The draw of ``bernoulli_positions``: a NumPy int64 array for the c and numpy backends (CPU), else a
    tensor on ``device`` (see ``dropblock.backends``).

    With ``blocks`` = (H, W, bh, bw), the n positions are a (planes, H - bh + 1, W - bw + 1) seed
    grid and each seed comes back as its block's top-left corner in the (planes, H, W) map.
    """
    backend = backends.seeds_backend(device)
    use_numpy = backend != "torch"
    if n <= 0 or gamma <= 0.0:
        return np.empty(0, dtype=np.int64) if use_numpy else torch.empty(0, dtype=torch.int64, device=device)
    if gamma >= 1.0:
        pos = np.arange(n, dtype=np.int64) if use_numpy else torch.arange(n, dtype=torch.int64, device=device)
        return pos if blocks is None else grid_to_map(pos, *blocks)
    native = _native.blocks if backend == "c" else None
    geometry = blocks if blocks is not None else (1, n, 1, 1)  # one row of n: positions are their own corners
    chunks = []
    start = 0  # the next position not yet decided
    per_log = 1.0 / math.log1p(-gamma)  # log U * per_log is a Geometric(gamma) failure count, before the floor
    while start < n:
        log_u = _log_uniforms(_draw_size(n - start, gamma), device, generator)
        if native is not None:
            out = np.empty(log_u.numel(), dtype=np.int64)
            written, start = native.gaps_to_corners(log_u.numpy(), out, per_log, start, n, *geometry)
            chunks.append(out[:written])
            continue
        gaps = log_u.mul_(per_log).clamp_(max=float(n))  # any gap >= n ends the draw; >= 0, so the cast floors
        if use_numpy:
            pos = np.cumsum(gaps.numpy().astype(np.int64) + 1)
            pos += start - 1
            last, below = int(pos[-1]), int(np.searchsorted(pos, n))
        else:  # one host sync per chunk for both numbers
            pos = torch.cumsum(gaps.to(torch.int64) + 1, 0) + (start - 1)
            last, below = torch.stack((pos[-1], torch.searchsorted(pos, n))).tolist()
        pos = pos[:below]  # sorted: the positions below n are a prefix
        chunks.append(pos if blocks is None else grid_to_map(pos, *blocks))
        start = n if last >= n else last + 1  # almost always one chunk
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks) if use_numpy else torch.cat(chunks)


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
    pos = positions_array(n, gamma, device=torch.device(device), generator=generator)
    return torch.from_numpy(pos) if isinstance(pos, np.ndarray) else pos
