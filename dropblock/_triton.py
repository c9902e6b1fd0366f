"""DropBlock in Triton: the kernels draw the seeds, grow them into blocks and apply the mask in one pass.

Conventions as in ``dropblock.gamma``: a seed falls with probability gamma at each position (r, c)
with r <= H - bh and c <= W - bw; its block covers rows r .. r + bh - 1 and columns c .. c + bw - 1.

Seeds: Philox4x32-10 (``tl.philox``) keyed by the torch generator (``philox_key``). The seed at
(plane, i, j) is lane j % 4 of the counter ``((plane * H + i) * ceil(W / 4) + j // 4, 0, stream)``; it
falls when that uint32 is below round(gamma * 2^32), so P(seed) is gamma to within 2^-33,
independently at every position.

Tiles: the (planes * H, W) map is cut into [BH, BW] tiles (``tiles``). Small maps stack whole planes
in a tile; taller or wider ones give each tile a halo (the bh - 1 rows above, the bw - 1 columns to
the left) whose seeds it recomputes instead of reading a seed map. Seeds grow into blocks in 64-bit
row words (shifts across, gathers of the rows above, each in doubling steps), or, in tiles too wide
for a word, by differences of prefix sums along rows and columns.

Rescale: "expected" and "none" are one kernel that reads x once and writes once. "batch" and
"sample" first count kept units per rescale group into device memory (atomics; no host sync), then
the apply kernel reads its scale there. The backward pass runs the apply kernel on the gradient with
the same key and counts: the mask is recomputed, never stored.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton import knobs

from dropblock.rng import default_generator

INTERPRET = bool(knobs.runtime.interpret)
"""True when the kernels run in Triton's interpreter (TRITON_INTERPRET=1 at import): CPU tensors only."""

LANES = 1 << 16 if INTERPRET else 4096
"""Units per tile. The interpreter pays Python overhead per operation, not per unit, so it takes big
tiles; masks do not depend on the tiling (tests shrink LANES and ROW to reach the halo code)."""
ROW = 64
"""Rows up to this wide fit one tile across (no column halo); wider maps get tiles this wide (at most 64,
the bits of a row word) while the block's halo fits in half of one, else wider tiles of prefix sums."""
_KEY_DOMAIN = 0x5DEECE66D1CE4E5B  # keeps our Philox stream apart from torch's own under the same seed


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@dataclass(frozen=True)
class Tiles:
    """How the (planes * H, W) map is cut into [bh_lanes, bw_lanes] tiles.

    Stacked (``slot`` > 0): whole planes, each in ``slot`` = next_pow2(H) tile rows (so a row's plane
    is a shift, not a division), ``per`` planes a tile, no row halo. Otherwise ``per`` output rows per
    tile after a halo of ``halo_r`` rows, ``tpp`` tiles per plane. Columns: ``ow`` output columns per
    tile after a halo of ``halo_c`` (a multiple of 4). ``words``: blocks grow in 64-bit row words
    (tiles up to 64 wide), else by prefix sums (any width)."""

    bh_lanes: int
    bw_lanes: int
    slot: int
    per: int
    halo_r: int
    tpp: int
    ow: int
    halo_c: int
    words: bool
    grid: tuple[int, int]


def tiles(planes: int, h: int, w: int, bh: int, bw: int) -> Tiles:
    """The tiling of a (planes, h, w) map for a bh x bw block (``LANES`` units a tile, or more for big blocks)."""
    row = min(64, _next_pow2(ROW))
    halo_c = -(-(bw - 1) // 4) * 4
    if w <= row:
        bw_lanes = max(4, _next_pow2(w))
        halo_c, ow, col_tiles, words = 0, bw_lanes, 1, True
    elif 2 * halo_c <= row:  # a row word holds the tile and its halo
        bw_lanes, ow, words = row, row - halo_c, True
        col_tiles = -(-w // ow)
    else:
        bw_lanes = max(row, _next_pow2(2 * halo_c))
        ow, words = bw_lanes - halo_c, False
        col_tiles = -(-w // ow)
    bh_lanes, slot = max(1, LANES // bw_lanes), _next_pow2(h)
    if slot <= bh_lanes:
        bh_lanes = min(bh_lanes, slot * _next_pow2(planes))
        per = bh_lanes // slot
        return Tiles(bh_lanes, bw_lanes, slot, per, 0, 1, ow, halo_c, words, (-(-planes // per), col_tiles))
    halo_r = bh - 1
    bh_lanes = max(bh_lanes, _next_pow2(2 * halo_r))
    per = bh_lanes - halo_r
    tpp = -(-h // per)
    return Tiles(bh_lanes, bw_lanes, 0, per, halo_r, tpp, ow, halo_c, words, (planes * tpp, col_tiles))


UNITS_PER_THREAD = 16
"""Units each thread holds: warps per tile = units / (32 * UNITS_PER_THREAD), 1 to 16 (benchmarks tune it)."""


def warps(lanes: int) -> int:
    """Warps per tile of ``lanes`` units: 8 for the default 4096 units."""
    return max(1, min(16, lanes // (32 * UNITS_PER_THREAD)))


def philox_key(generator: torch.Generator | None, device: torch.device) -> tuple[int, int]:
    """(key, stream) for one draw on ``device``, from ``generator`` or the device's default one; the
    generator moves on, so the same state gives the same mask and the next draw another.

    CUDA: the generator's seed and Philox offset, read and advanced on the host (no sync). CPU (the
    interpreter): a key drawn from the generator, stream 0."""
    gen = default_generator(device) if generator is None else generator
    if gen.device.type != device.type:
        raise ValueError(f"generator must be on the input's device ({device}), got one on {gen.device}")
    if device.type == "cuda":
        offset = gen.get_offset()
        gen.set_offset(offset + 4)
        return ((gen.initial_seed() ^ _KEY_DOMAIN) & (2**62 - 1)) | 2**62, offset
    return int(torch.randint(0, 2**62, (), generator=gen)) | 2**62, 0  # bit 62 set: always an int64 argument


@triton.jit
def _tile_keep(pid_r, pid_c, planes, H, W, hs, ws, bh, bw, key, stream_lo, stream_hi, tm1, per, halo_r, tpp, ow,
               halo_c, BH: tl.constexpr, BW: tl.constexpr, SLOT: tl.constexpr, WORDS: tl.constexpr):
    """One tile: plane [BH], row i [BH], column j [BW], the units it writes [BH, BW], kept [BH, BW]."""
    row = tl.arange(0, BH)
    col = tl.arange(0, BW)
    if SLOT > 0:
        plane = pid_r * (BH // SLOT) + row // SLOT
        i = row % SLOT
        rows = (i < H) & (plane < planes)
        first = row - i  # the tile row where this row's plane starts
    else:
        plane = pid_r // tpp + row * 0
        i = (pid_r % tpp) * per - halo_r + row
        rows = (i >= 0) & (i < H)
        first = row * 0
    col0 = pid_c * ow - halo_c  # a multiple of 4
    j = col0 + col
    c0 = ((plane * H + i) * tl.cdiv(W, 4) + col0 // 4).to(tl.uint32)
    c0 = c0[:, None] + tl.arange(0, BW // 4).to(tl.uint32)[None, :]
    zero = c0 * 0
    r0, r1, r2, r3 = tl.philox(key, c0, zero, zero + stream_lo.to(tl.uint32, bitcast=True),
                               zero + stream_hi.to(tl.uint32, bitcast=True))
    rnd = tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3))  # unit 4k + m takes lane m of counter k
    seed = (rnd <= tm1.to(tl.uint32, bitcast=True)) & (rows & (i < hs))[:, None] & ((j >= 0) & (j < ws))[None, :]
    if WORDS:
        dropped = _grow_words(seed, col, first, bh, bw, BH, BW)
    else:
        dropped = _grow_sums(seed, row, col, first, bh, bw)
    writes = (rows & (row >= halo_r))[:, None] & ((col >= halo_c) & (j < W))[None, :]
    return plane, i, j, writes, ~dropped


@triton.jit
def _grow_words(seed, col, first, bh, bw, BH: tl.constexpr, BW: tl.constexpr):
    """Seeds [BH, BW] -> dropped [BH, BW], for BW <= 64: each tile row becomes one 64-bit word; a block
    grows across by ORing the word with itself shifted by 1 .. bw - 1 (in doubling steps), and down by
    ORing each row with the bh - 1 rows above it in its plane (gathers, in doubling steps)."""
    shift = col.to(tl.uint64)[None, :]
    words = tl.sum(tl.where(seed, tl.full([BH, BW], 1, tl.uint64) << shift, 0).to(tl.uint64), 1)  # distinct bits
    span = 1
    while span * 2 <= bw:  # covers shifts 0 .. span - 1
        words = words | (words << span)
        span *= 2
    words = words | (words << (bw - span))  # and bw - span .. bw - 1
    row = tl.arange(0, BH)
    span = 1
    while span * 2 <= bh:  # covers rows row - span + 1 .. row, within the plane
        above = row - span
        words = words | tl.where(above >= first, tl.gather(words, tl.maximum(above, 0), 0), 0)
        span *= 2
    above = row - (bh - span)
    words = words | tl.where(above >= first, tl.gather(words, tl.maximum(above, 0), 0), 0)
    return ((words[:, None] >> shift) & 1) != 0


@triton.jit
def _grow_sums(seed, row, col, first, bh, bw):
    """Seeds -> dropped for tiles of any width: a unit is covered across when its row holds a seed in
    the bw columns ending at it (a difference of prefix sums), dropped when such a unit lies in the bh
    rows ending at it, in its plane. (Sums: Triton's interpreter runs other scans one element at a time.)"""
    uu = col[None, :] + row[:, None] * 0
    tt = row[:, None] + col[None, :] * 0
    seeds = tl.cumsum(seed.to(tl.int32), 1)  # seeds at or left of each unit in its tile row
    left = tl.where(uu >= bw, tl.gather(seeds, tl.maximum(uu - bw, 0), 1), 0)
    across = tl.cumsum((seeds > left).to(tl.int32), 0)  # rows at or above with a seed within bw to the left
    lo = tl.maximum(tt - bh, first[:, None] - 1)  # the row above the window of bh rows (never above the plane)
    return across > tl.where(lo >= 0, tl.gather(across, tl.maximum(lo, 0), 0), 0)


_GEOMETRY = ("planes", "H", "W", "hs", "ws", "bh", "bw", "key", "stream_lo", "stream_hi", "tm1", "per", "halo_r",
             "tpp", "ow", "halo_c")
"""Integer arguments the kernels must not be specialized on (Triton compiles a variant per value that
is 1 or a multiple of 16): the key and stream are random, the rest would multiply compiles."""


@triton.jit(do_not_specialize=("planes_c",) + _GEOMETRY)
def _count_kernel(kept_ptr, planes_c, planes, H, W, hs, ws, bh, bw, key, stream_lo, stream_hi, tm1, per, halo_r,
                  tpp, ow, halo_c, BH: tl.constexpr, BW: tl.constexpr, SLOT: tl.constexpr, WORDS: tl.constexpr,
                  PER_SAMPLE: tl.constexpr):
    """Adds this tile's kept mask units to kept[0] (batch) or kept[sample] (per sample)."""
    plane, i, j, writes, keep = _tile_keep(tl.program_id(0), tl.program_id(1), planes, H, W, hs, ws, bh, bw, key,
                                           stream_lo, stream_hi, tm1, per, halo_r, tpp, ow, halo_c, BH, BW, SLOT, WORDS)
    k = (keep & writes).to(tl.int32)
    if PER_SAMPLE:
        row_kept = tl.sum(k, 1).to(tl.int64)
        tl.atomic_add(kept_ptr + plane // planes_c, row_kept, mask=row_kept > 0)
    else:
        tl.atomic_add(kept_ptr, tl.sum(k).to(tl.int64))


@triton.jit(do_not_specialize=("group_numel", "C") + _GEOMETRY)
def _apply_kernel(x_ptr, out_ptr, kept_ptr, scale, group_numel, eps, C, planes, H, W, hs, ws, bh, bw, key, stream_lo,
                  stream_hi, tm1, per, halo_r, tpp, ow, halo_c, sxn, sxc, sxh, sxw, son, soc, soh, sow,
                  BH: tl.constexpr, BW: tl.constexpr, SLOT: tl.constexpr, WORDS: tl.constexpr, SCALE: tl.constexpr,
                  SHARED: tl.constexpr, PLANAR: tl.constexpr, F64: tl.constexpr, I64: tl.constexpr):
    """out = x * scale where kept, 0 where dropped. SCALE: 0 the ``scale`` argument (float32), 1 from
    kept[0] (batch), 2 from kept[sample], 3 a float64 scale at kept_ptr. SHARED: one mask plane per
    sample, applied to its C channels. PLANAR: plane p starts at p * sxc (and p * soc), as in NCHW
    tensors. I64: 64-bit offsets (2^31 units or more)."""
    plane, i, j, writes, keep = _tile_keep(tl.program_id(0), tl.program_id(1), planes, H, W, hs, ws, bh, bw, key,
                                           stream_lo, stream_hi, tm1, per, halo_r, tpp, ow, halo_c, BH, BW, SLOT, WORDS)
    if SCALE == 1:
        s = _rescale(group_numel, tl.load(kept_ptr).to(tl.float64), eps)
    elif SCALE == 2:
        kept = tl.load(kept_ptr + (plane if SHARED else plane // C), mask=plane < planes, other=0)
        s = _rescale(group_numel, kept.to(tl.float64), eps)[:, None]
    elif SCALE == 3:
        s = tl.load(kept_ptr)
    else:
        s = tl.cast(scale, tl.float64)
    s = s if F64 else s.to(tl.float32)
    if I64:
        plane, i, j = plane.to(tl.int64), i.to(tl.int64), j.to(tl.int64)
    jx, jo = (j * sxw)[None, :], (j * sow)[None, :]
    if SHARED:
        rx, ro = plane * sxn + i * sxh, plane * son + i * soh
        c = 0
        while c < C:  # (a while loop: Triton's interpreter cannot run range() over an argument under NumPy 2.4)
            v = tl.load(x_ptr + (rx + c * sxc)[:, None] + jx, mask=writes)
            r = tl.where(keep, v.to(s.dtype) * s, 0.0)
            tl.store(out_ptr + (ro + c * soc)[:, None] + jo, r.to(v.dtype), mask=writes)
            c += 1
    else:
        if PLANAR:
            rx, ro = plane * sxc + i * sxh, plane * soc + i * soh
        else:
            n, c = plane // C, plane % C
            rx, ro = n * sxn + c * sxc + i * sxh, n * son + c * soc + i * soh
        v = tl.load(x_ptr + rx[:, None] + jx, mask=writes)
        r = tl.where(keep, v.to(s.dtype) * s, 0.0)
        tl.store(out_ptr + ro[:, None] + jo, r.to(v.dtype), mask=writes)


@triton.jit
def _rescale(group_numel, kept, eps):
    """numel / (eps + kept), and 0 for a group that keeps nothing (its scale meets only zeros; a tiny eps
    would make it inf), computed without forming inf."""
    return tl.where(kept > 0, group_numel / (eps + tl.maximum(kept, 1.0)), 0.0)


_SCALE_MODES = {"expected": 0, "none": 0, "batch": 1, "sample": 2}


def launch(x: torch.Tensor, key: int, stream: int, plan, rescale: str, shared: bool, eps: float,
           out: torch.Tensor | None = None, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (N, C, H, W) times the mask of Philox (key, stream), any strides; writes ``out`` (may be x itself).

    ``kept``: the units kept per rescale group ((1,) batch, (N,) sample, int64 on x's device) from an
    earlier draw with the same key (the backward pass), or None to count them here. Returns (out, kept)."""
    n, c, h, w = x.shape
    planes_c = 1 if shared else c
    planes = n * planes_c
    t = tiles(planes, h, w, plan.bh, plan.bw)
    out = torch.empty_like(x) if out is None else out
    thresh = min(1 << 32, round(plan.gamma * (1 << 32)))  # a seed where a uint32 draw <= thresh - 1
    tm1 = (thresh - 1) % (1 << 32)
    geometry = (planes, h, w, h - plan.bh + 1 if thresh else 0, w - plan.bw + 1, plan.bh, plan.bw, key,
                *(_int32_bits(v) for v in (stream % (1 << 32), stream >> 32, tm1)), t.per, t.halo_r, t.tpp, t.ow,
                t.halo_c)
    lanes = dict(BH=t.bh_lanes, BW=t.bw_lanes, SLOT=t.slot, WORDS=t.words, num_warps=warps(t.bh_lanes * t.bw_lanes))
    mode, f64 = _SCALE_MODES[rescale], x.dtype == torch.float64
    if mode and kept is None:
        kept = torch.zeros(n if mode == 2 else 1, dtype=torch.int64, device=x.device)
        with _on(x.device):
            _count_kernel[t.grid](kept, planes_c, *geometry, PER_SAMPLE=mode == 2, **lanes)
    source = kept if mode else out
    if not mode and f64:  # a float argument reaches the kernel as float32: a float64 scale goes through memory
        source, mode = torch.full((1,), plan.scale(rescale), dtype=torch.float64, device=x.device), 3
    planar = x.stride(0) == c * x.stride(1) and out.stride(0) == c * out.stride(1)
    wide = max(x.numel(), _extent(x), _extent(out)) >= 1 << 31
    with _on(x.device):
        _apply_kernel[t.grid](
            x, out, source, plan.scale(rescale), planes * h * w if mode == 1 else planes_c * h * w, float(eps), c,
            *geometry, *x.stride(), *out.stride(), SCALE=mode, SHARED=shared, PLANAR=planar, F64=f64, I64=wide,
            **lanes,
        )
    return out, kept


def _on(device: torch.device):
    """Triton launches on the current CUDA device: make it x's."""
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def _int32_bits(v: int) -> int:
    """A uint32 as the int32 with the same bits: the kernels take it as int32 whatever its value (a type
    that depended on the value would compile another kernel variant)."""
    return v - (1 << 32) if v >= 1 << 31 else v


def _extent(t: torch.Tensor) -> int:
    """One past the largest element offset ``t`` reaches."""
    return 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))


def run(x: torch.Tensor, plan, rescale: str, shared: bool, eps: float, generator: torch.Generator | None,
        out: torch.Tensor | None = None, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``launch`` with the key drawn from ``generator`` (or the default one): no autograd."""
    return launch(x, *philox_key(generator, x.device), plan, rescale, shared, eps, out, kept)


class _DropBlock(torch.autograd.Function):
    """Autograd for eager calls: the backward pass reruns the apply kernel on the gradient with the
    forward's key and counts (``_Replay``), so nothing mask-sized is saved."""

    @staticmethod
    def forward(ctx, x, key, stream, plan, rescale, shared, eps, inplace):  # noqa: D102
        out, kept = launch(x, key, stream, plan, rescale, shared, eps, out=x if inplace else None)
        ctx.args = (key, stream, plan, rescale, shared, eps)
        if inplace:
            ctx.mark_dirty(x)
        if kept is not None:
            ctx.save_for_backward(kept)
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        kept = ctx.saved_tensors[0] if ctx.saved_tensors else None
        return _Replay.apply(grad, kept, *ctx.args), *([None] * 7)


class _Replay(torch.autograd.Function):
    """The mask of (key, stream) with the counts ``kept`` applied to ``grad``: a linear map that is its own
    adjoint, so its backward pass is itself again (any order of derivatives)."""

    @staticmethod
    def forward(ctx, grad, kept, key, stream, plan, rescale, shared, eps):  # noqa: D102
        ctx.args = (key, stream, plan, rescale, shared, eps)
        if kept is not None:
            ctx.save_for_backward(kept)
        return launch(grad, key, stream, plan, rescale, shared, eps, kept=kept)[0]

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        kept = ctx.saved_tensors[0] if ctx.saved_tensors else None
        return _Replay.apply(grad, kept, *ctx.args), *([None] * 7)


def drop_block2d(x: torch.Tensor, plan, rescale: str, shared: bool, eps: float, generator: torch.Generator | None,
                 inplace: bool, kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DropBlock on x through the kernels, with autograd where x requires grad. Returns (out, kept);
    ``kept`` given (from a draw of the same generator state) skips the count."""
    if kept is not None or not (torch.is_grad_enabled() and x.requires_grad):
        return run(x, plan, rescale, shared, eps, generator, out=x if inplace else None, kept=kept)
    key, stream = philox_key(generator, x.device)
    return _DropBlock.apply(x, key, stream, plan, rescale, shared, eps, inplace), None
