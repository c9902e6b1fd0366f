"""DropBlock in Triton: the kernels draw the seeds, grow them into blocks and apply the mask in one pass.

Conventions as in ``dropblock.gamma``: a seed falls with probability gamma at each position (r, c)
with r <= H - bh and c <= W - bw; its block covers rows r .. r + bh - 1 and columns c .. c + bw - 1.

Seeds: Philox (``tl.randint4x``) keyed by the torch generator (``philox_key``). The seed at (plane, i, j)
is lane j % 4 of counter ``base + (plane * H + i) * ceil(W / 4) + j // 4``; it falls when that uint32
is below round(gamma * 2^32), so P(seed) is gamma to within 2^-33, independently at every position.

Tiles: the (planes * H, W) map is cut into [BH, BW] tiles. Small maps stack whole planes in a tile;
taller or wider ones give each tile a halo (the bh - 1 rows above, the bw - 1 columns to the left)
whose seeds it recomputes instead of reading a seed map. Two prefix sums grow seeds into blocks: a
unit is covered across when its row holds a seed in the bw columns ending at it (a difference of
prefix sums along the row), and dropped when such a unit lies in the bh rows ending at it, in its own
plane (the same down the column). Sums, not prefix maxima: Triton's interpreter runs cumsum in NumPy
but any other scan one element at a time.

Rescale: "expected" and "none" are one kernel that reads x once and writes once. "batch" and
"sample" first count kept units per rescale group into device memory (atomics; no host sync), then
the apply kernel reads its scale there. The backward pass runs the apply kernel on the gradient with
the same key and counts: the mask is recomputed, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton import knobs

INTERPRET = bool(knobs.runtime.interpret)
"""True when the kernels run in Triton's interpreter (TRITON_INTERPRET=1 at import): CPU tensors only."""

LANES = 1 << 16 if INTERPRET else 4096
"""Units per tile. The interpreter pays Python overhead per operation, not per unit, so it takes big
tiles; masks do not depend on the tiling (tests shrink LANES and ROW to reach the halo code)."""
ROW = 128
"""Rows up to this wide fit one tile across (no column halo)."""
_KEY_DOMAIN = 0x5DEECE66D1CE4E5B  # keeps our Philox stream apart from torch's own under the same seed


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@dataclass(frozen=True)
class Tiles:
    """How the (planes * H, W) map is cut. Stacked: ``per`` whole planes per tile, no row halo.
    Otherwise ``per`` output rows per tile after a halo of ``halo_r`` rows, ``tpp`` tiles per plane.
    Columns: ``ow`` output columns per tile after a halo of ``halo_c`` (a multiple of 4)."""

    bh_lanes: int
    bw_lanes: int
    stacked: bool
    per: int
    halo_r: int
    tpp: int
    ow: int
    halo_c: int
    grid: tuple[int, int]


def tiles(planes: int, h: int, w: int, bh: int, bw: int) -> Tiles:
    """The tiling of a (planes, h, w) map for a bh x bw block (``LANES`` units a tile, or more for big blocks)."""
    if w <= ROW:
        bw_lanes, halo_c, ow, col_tiles = max(4, _next_pow2(w)), 0, max(4, _next_pow2(w)), 1
    else:
        halo_c = -(-(bw - 1) // 4) * 4
        bw_lanes = max(_next_pow2(ROW), _next_pow2(2 * halo_c))
        ow = bw_lanes - halo_c
        col_tiles = -(-w // ow)
    bh_lanes = max(1, LANES // bw_lanes)
    if h <= bh_lanes:
        bh_lanes = min(bh_lanes, _next_pow2(planes * h))
        per = bh_lanes // h
        return Tiles(bh_lanes, bw_lanes, True, per, 0, 1, ow, halo_c, (-(-planes // per), col_tiles))
    halo_r = bh - 1
    bh_lanes = max(bh_lanes, _next_pow2(2 * halo_r))
    per = bh_lanes - halo_r
    tpp = -(-h // per)
    return Tiles(bh_lanes, bw_lanes, False, per, halo_r, tpp, ow, halo_c, (planes * tpp, col_tiles))


def counters(planes: int, h: int, w: int) -> int:
    """Philox counters one draw uses: one per 4 units of each row."""
    return planes * h * -(-w // 4)


def philox_key(generator: torch.Generator | None, device: torch.device, used: int) -> tuple[int, int]:
    """(key, counter base) for a draw of ``used`` counters on ``device``, from ``generator`` or the
    device's default one; the generator moves past them, so the same state gives the same mask.

    CUDA: the generator's seed and Philox offset, read and advanced on the host (no sync). CPU (the
    interpreter): a key drawn from the generator, base 0."""
    from dropblock.sampling import default_generator

    gen = default_generator(device) if generator is None else generator
    if gen.device.type != device.type:
        raise ValueError(f"generator must be on the input's device ({device}), got one on {gen.device}")
    if device.type == "cuda":
        offset = gen.get_offset()
        gen.set_offset(offset + -(-used // 4) * 4)
        return (gen.initial_seed() ^ _KEY_DOMAIN) & (2**63 - 1), offset
    return int(torch.randint(0, 2**62, (), generator=gen)), 0


@triton.jit
def _tile_keep(pid_r, pid_c, planes, H, W, bh, bw, key, base, thresh, per, halo_r, tpp, ow, halo_c,
               BH: tl.constexpr, BW: tl.constexpr, STACKED: tl.constexpr):
    """One tile: plane [BH, 1], row i [BH, 1], column j [1, BW], units it writes [BH, BW], kept [BH, BW]."""
    t = tl.arange(0, BH)[:, None]
    u = tl.arange(0, BW)[None, :]
    if STACKED:
        plane = pid_r * per + t // H
        i = t % H
        rows = (t < per * H) & (plane < planes)
        start = (t // H) * H  # first tile row of this unit's plane
    else:
        plane = pid_r // tpp + t * 0
        i = (pid_r % tpp) * per - halo_r + t
        rows = (i >= 0) & (i < H)
        start = t * 0
    col0 = pid_c * ow - halo_c  # a multiple of 4
    j = col0 + u
    q = tl.arange(0, BW // 4)[None, :]
    counter = base + (plane.to(tl.int64) * H + i) * tl.cdiv(W, 4) + (col0 // 4 + q)
    r0, r1, r2, r3 = tl.randint4x(key, counter)
    rnd = tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3))  # unit 4k + m takes lane m of counter k
    seed = (rnd.to(tl.int64) < thresh) & rows & (i <= H - bh) & (j >= 0) & (j <= W - bw)
    uu = u + t * 0
    tt = t + u * 0
    seeds = tl.cumsum(seed.to(tl.int32), 1)  # seeds at or left of each unit in its tile row
    left = tl.where(uu >= bw, tl.gather(seeds, tl.maximum(uu - bw, 0), 1), 0)
    across = tl.cumsum((seeds > left).to(tl.int32), 0)  # rows at or above with a seed within bw to the left
    lo = tl.maximum(tt - bh, start - 1)  # the row above the window of bh rows (never above the plane)
    dropped = across > tl.where(lo >= 0, tl.gather(across, tl.maximum(lo, 0), 0), 0)
    writes = rows & (t >= halo_r) & (u >= halo_c) & (j < W)
    return plane, i, j, writes, ~dropped


@triton.jit
def _count_kernel(kept_ptr, planes, planes_c, H, W, bh, bw, key, base, thresh, per, halo_r, tpp, ow, halo_c,
                  BH: tl.constexpr, BW: tl.constexpr, STACKED: tl.constexpr, PER_SAMPLE: tl.constexpr):
    """Adds this tile's kept mask units to kept[0] (batch) or kept[sample] (per sample)."""
    plane, i, j, writes, keep = _tile_keep(tl.program_id(0), tl.program_id(1), planes, H, W, bh, bw, key, base,
                                           thresh, per, halo_r, tpp, ow, halo_c, BH, BW, STACKED)
    k = (keep & writes).to(tl.int64)
    if PER_SAMPLE:
        row_kept = tl.sum(k, 1)
        sample = tl.reshape(plane, (BH,)) // planes_c
        tl.atomic_add(kept_ptr + sample, row_kept, mask=row_kept > 0)
    else:
        tl.atomic_add(kept_ptr, tl.sum(k))


@triton.jit
def _apply_kernel(x_ptr, out_ptr, kept_ptr, scale, group_numel, eps, C, planes, H, W, bh, bw, key, base, thresh,
                  per, halo_r, tpp, ow, halo_c, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                  BH: tl.constexpr, BW: tl.constexpr, STACKED: tl.constexpr, SCALE: tl.constexpr,
                  SHARED: tl.constexpr, F64: tl.constexpr):
    """out = x * scale where kept, 0 where dropped. SCALE: 0 the ``scale`` argument (float32), 1 from
    kept[0] (batch), 2 from kept[sample], 3 a float64 scale at kept_ptr; SHARED: one mask plane per
    sample, applied to its C channels."""
    plane, i, j, writes, keep = _tile_keep(tl.program_id(0), tl.program_id(1), planes, H, W, bh, bw, key, base,
                                           thresh, per, halo_r, tpp, ow, halo_c, BH, BW, STACKED)
    n = plane if SHARED else plane // C
    if SCALE == 1:
        s = group_numel / (eps + tl.load(kept_ptr).to(tl.float64))
    elif SCALE == 2:
        s = group_numel / (eps + tl.load(kept_ptr + n, mask=plane < planes, other=0).to(tl.float64))
    elif SCALE == 3:
        s = tl.load(kept_ptr)
    else:
        s = tl.cast(scale, tl.float64)
    s = s if F64 else s.to(tl.float32)
    n = n.to(tl.int64)
    i = i.to(tl.int64)
    j = j.to(tl.int64)
    if SHARED:
        c = 0
        while c < C:  # (a while loop: Triton's interpreter cannot run range() over an argument under NumPy 2.4)
            v = tl.load(x_ptr + n * sxn + c * sxc + i * sxh + j * sxw, mask=writes)
            r = tl.where(keep, v.to(s.dtype) * s, 0.0)
            tl.store(out_ptr + n * son + c * soc + i * soh + j * sow, r.to(v.dtype), mask=writes)
            c += 1
    else:
        c = (plane % C).to(tl.int64)
        v = tl.load(x_ptr + n * sxn + c * sxc + i * sxh + j * sxw, mask=writes)
        r = tl.where(keep, v.to(s.dtype) * s, 0.0)
        tl.store(out_ptr + n * son + c * soc + i * soh + j * sow, r.to(v.dtype), mask=writes)


_SCALE_MODES = {"expected": 0, "none": 0, "batch": 1, "sample": 2}


def launch(x: torch.Tensor, key: int, base: int, plan, rescale: str, shared: bool, eps: float,
           out: torch.Tensor | None = None, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (N, C, H, W) times the mask of Philox (key, base), any strides; writes ``out`` (may be x itself).

    ``kept``: the units kept per rescale group ((1,) batch, (N,) sample, int64 on x's device) from an
    earlier draw with the same key (the backward pass), or None to count them here. Returns (out, kept)."""
    n, c, h, w = x.shape
    planes_c = 1 if shared else c
    planes = n * planes_c
    tl_ = tiles(planes, h, w, plan.bh, plan.bw)
    out = torch.empty_like(x) if out is None else out
    thresh = min(1 << 32, round(plan.gamma * (1 << 32)))
    geometry = (planes, h, w, plan.bh, plan.bw, key, base, thresh, tl_.per, tl_.halo_r, tl_.tpp, tl_.ow, tl_.halo_c)
    lanes = dict(BH=tl_.bh_lanes, BW=tl_.bw_lanes, STACKED=tl_.stacked, num_warps=8 if tl_.bh_lanes * tl_.bw_lanes >= 4096 else 4)
    mode, f64 = _SCALE_MODES[rescale], x.dtype == torch.float64
    if mode and kept is None:
        kept = torch.zeros(n if mode == 2 else 1, dtype=torch.int64, device=x.device)
        _count_kernel[tl_.grid](kept, *geometry[:1], planes_c, *geometry[1:], PER_SAMPLE=mode == 2, **lanes)
    source = kept if mode else out
    if not mode and f64:  # a float argument reaches the kernel as float32: a float64 scale goes through memory
        source, mode = torch.full((1,), plan.scale(rescale), dtype=torch.float64, device=x.device), 3
    group_numel = planes * h * w if mode == 1 else planes_c * h * w
    _apply_kernel[tl_.grid](
        x, out, source, plan.scale(rescale), group_numel, float(eps), c, *geometry, *x.stride(), *out.stride(),
        SCALE=mode, SHARED=shared, F64=f64, **lanes,
    )
    return out, kept


def run(x: torch.Tensor, plan, rescale: str, shared: bool, eps: float, generator: torch.Generator | None,
        out: torch.Tensor | None = None, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``launch`` with the key drawn from ``generator`` (or the default one): no autograd."""
    n, c, h, w = x.shape
    key, base = philox_key(generator, x.device, counters(n * (1 if shared else c), h, w))
    return launch(x, key, base, plan, rescale, shared, eps, out, kept)


class _DropBlock(torch.autograd.Function):
    """Autograd for eager calls: the backward pass reruns the apply kernel on the gradient with the
    forward's key and counts, so nothing mask-sized is saved."""

    @staticmethod
    def forward(ctx, x, key, base, plan, rescale, shared, eps, inplace):  # noqa: D102
        out, kept = launch(x, key, base, plan, rescale, shared, eps, out=x if inplace else None)
        ctx.args = (key, base, plan, rescale, shared, eps)
        if inplace:
            ctx.mark_dirty(x)
        if kept is not None:
            ctx.save_for_backward(kept)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: D102
        key, base, plan, rescale, shared, eps = ctx.args
        kept = ctx.saved_tensors[0] if ctx.saved_tensors else None
        return launch(grad, key, base, plan, rescale, shared, eps, kept=kept)[0], *([None] * 7)


def drop_block2d(x: torch.Tensor, plan, rescale: str, shared: bool, eps: float, generator: torch.Generator | None,
                 inplace: bool, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DropBlock on x through the kernels, with autograd where x requires grad. Returns (out, kept);
    ``kept`` given (from a draw of the same generator state) skips the count."""
    if kept is not None or not (torch.is_grad_enabled() and x.requires_grad):
        return run(x, plan, rescale, shared, eps, generator, out=x if inplace else None, kept=kept)
    n, c, h, w = x.shape
    key, base = philox_key(generator, x.device, counters(n * (1 if shared else c), h, w))
    return _DropBlock.apply(x, key, base, plan, rescale, shared, eps, inplace), None
