"""Masks of DropBlock, dropout, spatial dropout and Cutout, as torch tensors.

Every mask is ``keep``: 1 (or True) where a unit survives, 0 where it is dropped.
DropBlock masks are built from exact Bernoulli(gamma) seeds (see ``dropblock.sampling``) by
painting only the dropped blocks, so their cost grows with ``p * numel``, not ``b^2 * numel``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dropblock.errors import UsageError
from dropblock import _native, backends
from dropblock._checks import check_positive_int, check_probability, check_seed
from dropblock.gamma import clip_block, resolve_gamma
from dropblock.rng import make_generator
from dropblock.sampling import bernoulli_positions, grid_to_map, positions_array

# Paint block by block while the painted indices stay below this multiple of numel;
# beyond it (drop rates near 1 with big blocks) a dense max-pool is cheaper.
_SPARSE_LIMIT = 2.0
_CPU = torch.device("cpu")


def _block_offsets(bh: int, bw: int, width: int, device: torch.device) -> torch.Tensor:
    rows = torch.arange(bh, device=device, dtype=torch.int64) * width
    cols = torch.arange(bw, device=device, dtype=torch.int64)
    return (rows[:, None] + cols[None, :]).reshape(-1)


def seed_positions(
    planes: int, height: int, width: int, bh: int, bw: int, gamma: float,
    *, device: torch.device, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Flat indices into a (planes, H - bh + 1, W - bw + 1) seed grid of Bernoulli(gamma) seeds, shape (K,)."""
    hs, ws = height - bh + 1, width - bw + 1
    return bernoulli_positions(planes * hs * ws, gamma, device=device, generator=generator)


def block_corners(
    planes: int, height: int, width: int, bh: int, bw: int, gamma: float,
    *, device: torch.device, generator: torch.Generator | None = None,
) -> np.ndarray | torch.Tensor:
    """Bernoulli(gamma) seeds as sorted flat indices of their blocks' top-left corners in the
    (planes, H, W) map, shape (K,): a NumPy array on the CPU (cheap to count with), else a tensor."""
    hs, ws = height - bh + 1, width - bw + 1
    return positions_array(planes * hs * ws, gamma, device=device, generator=generator,
                           blocks=(height, width, bh, bw))



def block_indices(corners: torch.Tensor, width: int, bh: int, bw: int) -> torch.Tensor:
    """Flat indices into the map of every unit the blocks at ``corners`` cover, shape (K * bh * bw,).

    Overlapping blocks repeat indices."""
    return (corners[:, None] + _block_offsets(bh, bw, width, corners.device)[None, :]).reshape(-1)


def fill_blocks(flat: torch.Tensor, corners, width: int, bh: int, bw: int, value: float | bool) -> None:
    """Set the bh x bw block at each top-left corner of a contiguous 1-D (planes * H * W) tensor to ``value``.

    ``corners``: flat top-left indices, an integer tensor on ``flat``'s device or a NumPy array.
    With the C helper backend, zeroing goes through it (bh short runs of stores per block). Otherwise the
    blocks are rows of an overlapping strided view (row i starts at flat index i), so the fill
    writes bw contiguous units per block row and needs no per-unit index. Overlapping blocks write
    the same value twice, which is harmless. Not for tensors that autograd tracks: the C helper
    bypasses torch, so the tensor's version counter does not move.
    """
    native = _native.blocks if not value and backends.seeds_backend(flat.device) == "c" else None
    if native is not None:
        if isinstance(corners, torch.Tensor):
            corners = corners.to(torch.int64).contiguous().numpy()
        native.zero_blocks(flat.data_ptr(), flat.element_size(), flat.numel(), corners, width, bh, bw)
        return
    rows = flat.numel() - (bh - 1) * width - (bw - 1)
    index = torch.as_tensor(corners, device=flat.device)
    flat.as_strided((rows, bh, bw), (1, width, 1)).index_fill_(0, index, value)


def union_size(corners, height: int, width: int, bh: int, bw: int) -> int:
    """Exact number of units the bh x bw blocks at ``corners`` cover together (overlaps counted once).

    ``corners``: sorted flat top-left indices into the (planes, H, W) map, a NumPy array or a tensor.
    A block alone in its plane covers bh * bw units. The others are cut into their bh row segments
    [start, start + bw) of the flat map; a segment never runs past its row's end, so with the
    starts sorted, segment i adds min(start[i + 1] - start[i], bw) units and the last adds bw.
    Cost: with the C helper (NumPy input, c backend), one bitmap per plane that holds several blocks; in NumPy,
    a stable sort of bh * (blocks that share a plane) keys made of bh sorted runs; for tensors, a
    sort of all bh * K keys, which needs no host sync before the final count.
    """
    k = len(corners)
    if k < 2:
        return k * bh * bw
    if isinstance(corners, np.ndarray) and backends.seeds_backend(_CPU) == "c":
        return _native.blocks.union_size(np.ascontiguousarray(corners, dtype=np.int64), height, width, bh, bw)
    if isinstance(corners, torch.Tensor):  # GPUs: sort every block's rows, one host sync at the end
        rows = torch.arange(bh, dtype=torch.int64, device=corners.device)[:, None] * width
        starts = torch.sort((corners[None, :] + rows).reshape(-1)).values
        return int(torch.diff(starts).clamp_(max=bw).sum()) + bw
    plane = corners // (height * width)
    shared = plane[1:] == plane[:-1]
    crowded = np.concatenate(([shared[0]], shared[:-1] | shared[1:], [shared[-1]]))  # shares its plane
    rows = np.arange(bh, dtype=np.int64)[:, None] * width
    starts = np.sort((corners[crowded][None, :] + rows).reshape(-1), kind="stable")  # bh sorted runs
    n_crowded = int(crowded.sum())
    covered = int(np.minimum(np.diff(starts), bw).sum()) + bw if n_crowded else 0
    return (k - n_crowded) * bh * bw + covered


def paint_blocks(
    mask: torch.Tensor, seeds: torch.Tensor, height: int, width: int, bh: int, bw: int,
) -> torch.Tensor:
    """Zero the bh x bw block of every seed in ``mask`` (planes, H, W), in place; returns ``mask``."""
    if seeds.numel() == 0:
        return mask
    planes = mask.shape[0]
    if seeds.numel() * bh * bw <= _SPARSE_LIMIT * mask.numel():
        fill_blocks(mask.view(-1), grid_to_map(seeds, height, width, bh, bw), width, bh, bw, False)
        return mask
    hs, ws = height - bh + 1, width - bw + 1
    grid = torch.zeros(planes * hs * ws, dtype=torch.float32, device=mask.device)
    grid.index_fill_(0, seeds, 1.0)
    grid = F.pad(grid.view(planes, 1, hs, ws), (bw - 1, bw - 1, bh - 1, bh - 1))
    dropped = F.max_pool2d(grid, (bh, bw), stride=1).view(planes, height, width)
    mask.masked_fill_(dropped.bool(), False)
    return mask


def block_keep_mask(
    planes: int, height: int, width: int, bh: int, bw: int, gamma: float, *,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A DropBlock keep mask (planes, H, W) bool, True where kept, and its seeds
    (flat indices into the (planes, H - bh + 1, W - bw + 1) seed grid)."""
    device = torch.device(device)
    seeds = seed_positions(planes, height, width, bh, bw, gamma, device=device, generator=generator)
    mask = torch.ones((planes, height, width), dtype=torch.bool, device=device)
    return paint_blocks(mask, seeds, height, width, bh, bw), seeds


@dataclass
class BlockMask:
    """One DropBlock draw.

    keep: (N, C, H, W) bool, True where kept (C is 1 when the mask is shared across channels).
    seeds: (K, 4) int64 rows of (n, c, row, col): each seed's block covers rows
        ``row .. row + bh - 1`` and columns ``col .. col + bw - 1``.
    gamma: the seed probability used.
    block: (bh, bw), the block after clipping to the map.
    """

    keep: torch.Tensor
    seeds: torch.Tensor
    gamma: float
    block: tuple[int, int]

    @property
    def drop_rate(self) -> float:
        """Fraction of dropped units in this draw."""
        return 1.0 - self.keep.float().mean().item()

    def seed_centres(self) -> torch.Tensor:
        """(K, 4) float: (n, c, row, col) of each block's centre, in map units."""
        bh, bw = self.block
        offset = torch.tensor([0.0, 0.0, (bh - 1) / 2, (bw - 1) / 2], device=self.seeds.device)
        return self.seeds.to(torch.float64) + offset.to(torch.float64)


def _shape4(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise UsageError(f"shape must be (N, C, H, W), got {tuple(shape)!r}")
    n, c, h, w = (check_positive_int(v, name) for v, name in zip(shape, ("N", "C", "H", "W")))
    return n, c, h, w


def dropblock_mask(
    shape: tuple[int, int, int, int], p: float, block_size: int, *,
    gamma: str | float = "paper", shared_channels: bool = False,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None, seed: int | None = None,
) -> BlockMask:
    """Draw one DropBlock mask for an (N, C, H, W) input, with its seeds (for figures and tests).

    ``gamma``: "paper" (Equation 1), "exact" (expected drop rate exactly p) or a float.
    A block larger than the map is clipped to it (each side separately). ``generator`` or
    ``seed`` (an integer in [0, 2**64 - 1]): the same one gives the same mask on the same device.
    """
    n, c, h, w = _shape4(shape)
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    seed = None if seed is None else check_seed(seed)
    bh, bw = clip_block(block_size, h, w)
    g = resolve_gamma(gamma, p, block_size, h, w)
    planes_c = 1 if shared_channels else c
    device = torch.device(device)
    if generator is None and seed is not None:
        generator = make_generator(seed, device)
    mask, seeds = block_keep_mask(n * planes_c, h, w, bh, bw, g, device=device, generator=generator)
    hs, ws = h - bh + 1, w - bw + 1
    plane, rest = torch.div(seeds, hs * ws, rounding_mode="floor"), seeds % (hs * ws)
    coords = torch.stack(
        [torch.div(plane, planes_c, rounding_mode="floor"), plane % planes_c,
         torch.div(rest, ws, rounding_mode="floor"), rest % ws], dim=1,
    )
    return BlockMask(mask.view(n, planes_c, h, w), coords, g, (bh, bw))


def dropout_mask(
    shape: tuple[int, int, int, int], p: float, *,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Element-wise dropout: (N, C, H, W) bool keep mask, each unit dropped with probability p."""
    n, c, h, w = _shape4(shape)
    p = check_probability(p)
    device = torch.device(device)
    keep = torch.ones(n * c * h * w, dtype=torch.bool, device=device)
    keep[bernoulli_positions(keep.numel(), p, device=device, generator=generator)] = False
    return keep.view(n, c, h, w)


def spatial_dropout_mask(
    shape: tuple[int, int, int, int], p: float, *,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Spatial dropout (nn.Dropout2d): (N, C, 1, 1) bool keep mask, whole channels dropped with probability p."""
    n, c, _, _ = _shape4(shape)
    p = check_probability(p)
    device = torch.device(device)
    return torch.rand(n, c, 1, 1, device=device, generator=generator) >= p


def cutout_mask(
    shape: tuple[int, int, int, int], n_holes: int, length: int, *,
    device: torch.device | str = "cpu", generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cutout (DeVries & Taylor 2017): an (N, 1, H, W) bool keep mask shared by all channels,
    and the hole centres (N, n_holes, 2) as (row, col).

    Each centre is uniform over the map; the hole covers rows ``y - length // 2 ..
    y - length // 2 + length - 1`` (a square of side ``length``; the original code's slice
    ``y - length // 2 : y + length // 2`` is one shorter for odd lengths), clipped at the border.
    """
    n, _, h, w = _shape4(shape)
    n_holes = check_positive_int(n_holes, "n_holes")
    length = check_positive_int(length, "length")
    device = torch.device(device)
    rows = torch.randint(0, h, (n, n_holes), device=device, generator=generator)
    cols = torch.randint(0, w, (n, n_holes), device=device, generator=generator)
    top, left = rows - length // 2, cols - length // 2
    r = torch.arange(h, device=device)
    c = torch.arange(w, device=device)
    in_rows = (r >= top[..., None]) & (r < top[..., None] + length)  # (N, holes, H)
    in_cols = (c >= left[..., None]) & (c < left[..., None] + length)  # (N, holes, W)
    erased = (in_rows[..., :, None] & in_cols[..., None, :]).any(dim=1)  # (N, H, W)
    return (~erased).unsqueeze(1), torch.stack([rows, cols], dim=-1)
