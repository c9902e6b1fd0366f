"""The DropBlock part of benchmarks/bench.py: ours against torchvision, timm and a bare multiply.

Shapes: ResNet-50's stages at 224 x 224, p = 0.1, block 7, one mask per channel, training mode.
Every contender runs forward, and forward + backward (torch.autograd.grad of a fixed upstream
gradient, so nothing accumulates). Contenders are interleaved (each repeat times all of them, in a
rotating order) so background load hits them alike; every ratio compares medians from one run.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from rich.table import Table

import dropblock
from dropblock import backends

STAGES = [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]  # ResNet-50 stages at 224x224
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
P, BLOCK = 0.1, 7
OURS, OURS_EXPECTED, TORCHVISION, TIMM, FLOOR = "ours", "ours expected", "torchvision", "timm", "floor x*mask"
FALLBACK = {"cpu": ("ours, no C", "numpy"), "cuda": ("ours, torch path", "torch")}
"""Per device, the path a machine without the default's extra gets: NumPy instead of the C helper on
the CPU, torch ops instead of the Triton kernels on CUDA (DROPBLOCK_BACKEND forces it)."""
PASSES = ("forward", "forward+backward")
GOALS = {  # device: (ours/floor, expected/floor, torchvision/ours), each on every shape and dtype
    "cpu": (3.0, 3.0, 10.0),
    "cuda": (2.0, 1.2, 10.0),
}


@dataclass(frozen=True)
class Settings:
    device: str
    batch: int
    warmup: int
    repeats: int
    cli_runs: int
    min_sample_s: float  # a timed sample loops a call until it lasts at least this long


def settings_for(quick: bool, device: str) -> Settings:
    """Repeats and batch size for a device; --quick trims the repeats, never the shapes."""
    batch = 64 if device == "cuda" else 8
    if quick:
        return Settings(device, batch, warmup=2, repeats=5, cli_runs=5, min_sample_s=0.002)
    return Settings(device, batch, warmup=3, repeats=25, cli_runs=7, min_sample_s=0.005)


def mask_backend(device: str) -> str:
    """The backend our default contender runs on ``device``, in words."""
    name = backends.for_device(torch.device(device))
    return {"c": "C helper", "numpy": "NumPy fallback (C helper not built)", "torch": "torch ops",
            "triton": "Triton kernels"}[name]


# ---------------------------------------------------------------- contenders


def optional_contenders() -> tuple[dict[str, Callable], dict[str, str]]:
    """torchvision's and timm's DropBlock where they import (any failure is a note, not a crash)."""
    found, notes = {}, {}
    try:
        from torchvision.ops import drop_block2d
        found[TORCHVISION] = lambda x: drop_block2d(x, P, BLOCK)
        notes[TORCHVISION] = f"torchvision {sys.modules['torchvision'].__version__}"
    except Exception as e:  # torchvision beside another torch raises RuntimeError, not ImportError
        notes[TORCHVISION] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        import timm
        from timm.layers import drop_block_2d
        found[TIMM] = lambda x: drop_block_2d(x, P, BLOCK, couple_channels=False)
        notes[TIMM] = f"timm {timm.__version__} (couple_channels=False)"
    except Exception as e:
        notes[TIMM] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return found, notes


def on_backend(name: str, fn: Callable) -> Callable:
    """``fn`` run with DROPBLOCK_BACKEND=name."""
    def call(t: torch.Tensor):
        saved = os.environ.get(backends.ENV)
        os.environ[backends.ENV] = name
        try:
            return fn(t)
        finally:
            if saved is None:
                del os.environ[backends.ENV]
            else:
                os.environ[backends.ENV] = saved
    return call


def contenders_for(x: torch.Tensor, optional: dict[str, Callable]) -> dict[str, Callable]:
    """Every forward contender as a one-argument call on x; the floor's mask is drawn once, in x's dtype."""
    ours = dropblock.DropBlock2d(P, BLOCK).train()
    ours_expected = dropblock.DropBlock2d(P, BLOCK, rescale="expected").train()
    mask = (torch.rand_like(x, dtype=torch.float32) >= P).to(x.dtype)
    label, fallback = FALLBACK[x.device.type]
    extra = {label: on_backend(fallback, ours)} if backends.for_device(x.device) != fallback else {}
    return {OURS: ours, OURS_EXPECTED: ours_expected, **extra, **optional, FLOOR: lambda t: t * mask}


def with_backward(fn: Callable, grad: torch.Tensor) -> Callable:
    """fn's forward and backward pass: the gradient of <fn(x), grad> with respect to x."""
    return lambda t: torch.autograd.grad(fn(t), t, grad)


# ---------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rotated(names: list[str], r: int) -> list[str]:
    """``names`` starting at index r (mod its length): repeat r's order when interleaving."""
    k = r % len(names) if names else 0
    return names[k:] + names[:k]


def time_loop(fn: Callable, x: torch.Tensor, loops: int, device: str) -> float:
    """Seconds per call over ``loops`` back-to-back calls, synchronized at both ends on CUDA."""
    sync(device)
    start = time.perf_counter()
    for _ in range(loops):
        fn(x)
    sync(device)
    return (time.perf_counter() - start) / loops


def calibrate(fn: Callable, x: torch.Tensor, s: Settings) -> int:
    """Warm up (the first call compiles Triton kernels), then the calls per timed sample so a sample
    lasts ``min_sample_s``."""
    per_call = min(time_loop(fn, x, 1, s.device) for _ in range(max(s.warmup, 1)))
    return max(1, min(1000, math.ceil(s.min_sample_s / max(per_call, 1e-9))))


def interleaved_medians(fns: dict[str, Callable], x: torch.Tensor, s: Settings) -> dict[str, float | str]:
    """Median ms per call of each contender; repeats rotate the order. A contender that raises gets its error."""
    loops, results = {}, {}
    for name, fn in fns.items():
        try:
            loops[name] = calibrate(fn, x, s)
        except Exception as e:
            results[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    names = list(loops)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(s.repeats):
        for name in rotated(names, r):
            samples[name].append(time_loop(fns[name], x, loops[name], s.device))
    results.update({n: 1000 * statistics.median(v) for n, v in samples.items()})
    return results


# ---------------------------------------------------------------- rows, goals, table


def ratio(a: float | str | None, b: float | str | None) -> float | None:
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None


def mask_rows(s: Settings) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Per pass, one row per (stage shape, dtype): median ms of every contender and the ratios."""
    optional, notes = optional_contenders()
    rows: dict[str, list[dict]] = {name: [] for name in PASSES}
    for dtype_name, dtype in DTYPES.items():
        for c, h, w in STAGES:
            torch.manual_seed(0)
            x = torch.randn(s.batch, c, h, w, device=s.device, dtype=dtype)
            forward = contenders_for(x, optional)
            ms = interleaved_medians(forward, x, s)
            rows["forward"].append(row(ms, [s.batch, c, h, w], dtype_name, FALLBACK[s.device][0]))
            grad = torch.randn_like(x)
            both = {name: with_backward(fn, grad) for name, fn in forward.items()}
            ms = interleaved_medians(both, x.requires_grad_(), s)
            rows["forward+backward"].append(row(ms, [s.batch, c, h, w], dtype_name, FALLBACK[s.device][0]))
            del x, grad, forward, both
    return rows, notes


def row(ms: dict, shape: list[int], dtype: str, fallback: str) -> dict:
    return {"shape": shape, "dtype": dtype, "ms": ms,
            "ours/floor": ratio(ms.get(OURS), ms.get(FLOOR)),
            "ours expected/floor": ratio(ms.get(OURS_EXPECTED), ms.get(FLOOR)),
            "fallback/floor": ratio(ms.get(fallback), ms.get(FLOOR)),
            "torchvision/ours": ratio(ms.get(TORCHVISION), ms.get(OURS)),
            "timm/ours": ratio(ms.get(TIMM), ms.get(OURS))}


def mask_goals(rows: dict[str, list[dict]], device: str) -> list[dict]:
    """Each goal on every shape and dtype: on CUDA for both passes, on the CPU for the forward pass."""
    ours, expected, tv = GOALS[device]
    goals = []
    for name in PASSES if device == "cuda" else PASSES[:1]:
        goals += [worst_goal(rows[name], "ours/floor", f"{name}: ours <= {ours}x the floor", ours, False),
                  worst_goal(rows[name], "ours expected/floor", f"{name}: expected <= {expected}x the floor",
                             expected, False),
                  worst_goal(rows[name], "torchvision/ours", f"{name}: ours >= {tv}x faster than torchvision",
                             tv, True)]
    return goals


def worst_goal(rows: list[dict], key: str, text: str, limit: float, higher_is_better: bool) -> dict:
    """A goal's verdict from its worst row (None where any row lacks the number)."""
    values = [(r[key], f"{r['dtype']} {tuple(r['shape'][1:])}") for r in rows]
    if any(v is None for v, _ in values):
        return {"goal": text, "value": None, "where": "", "passed": None, "note": "not measured"}
    value, where = (min if higher_is_better else max)(values)
    passed = value >= limit if higher_is_better else value <= limit
    misses = [w for v, w in values if (v < limit if higher_is_better else v > limit)]
    return {"goal": text, "value": value, "where": where, "passed": passed, "misses": misses}


def fmt_ms(v: float | str | None) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else f"{v:.3f}"


def fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def mask_table(rows: list[dict], notes: dict[str, str], s: Settings, name: str) -> Table:
    fallback = FALLBACK[s.device][0]
    names = [OURS, OURS_EXPECTED, fallback, TORCHVISION, TIMM, FLOOR]
    table = Table(title=f"Masks, {name}: p={P}, block={BLOCK}, batch {s.batch}, {s.device}, median ms of {s.repeats} "
                        f"(torchvision: {notes[TORCHVISION]}; timm: {notes[TIMM]})", title_justify="left")
    for col in ["dtype", "CxHxW", *names, "ours/floor", "expected/floor", "fallback/floor", "tv/ours", "timm/ours"]:
        table.add_column(col, justify="left" if col in ("dtype", "CxHxW") else "right")
    for r in rows:
        cells = [fmt_ms(r["ms"].get(n)) for n in names]
        ratios = [fmt_x(r[k]) for k in ("ours/floor", "ours expected/floor", "fallback/floor", "torchvision/ours",
                                        "timm/ours")]
        table.add_row(r["dtype"], "x".join(map(str, r["shape"][1:])), *cells, *ratios)
    return table


# ---------------------------------------------------------------- tuning the Triton tiles


SWEEP = [(lanes, per_thread) for lanes in (2048, 4096, 8192) for per_thread in (8, 16, 32)]


def tile_sweep(s: Settings) -> list[dict]:
    """Median ms of ours (batch) and ours expected, forward, per (tile units, units per thread) on
    every stage shape and dtype, against the floor: data to choose dropblock._triton's defaults."""
    from dropblock import _triton

    saved = _triton.LANES, _triton.UNITS_PER_THREAD
    rows = []
    try:
        for dtype_name, dtype in DTYPES.items():
            for c, h, w in STAGES:
                torch.manual_seed(0)
                x = torch.randn(s.batch, c, h, w, device=s.device, dtype=dtype)
                mask = (torch.rand_like(x, dtype=torch.float32) >= P).to(x.dtype)
                fns = {FLOOR: lambda t, mask=mask: t * mask}
                for lanes, per_thread in SWEEP:
                    fns |= {f"{name} {lanes}/{per_thread}": _with_tiles(fn, lanes, per_thread) for name, fn in (
                        (OURS, dropblock.DropBlock2d(P, BLOCK)), (OURS_EXPECTED, dropblock.DropBlock2d(P, BLOCK, rescale="expected")))}
                rows.append({"shape": [s.batch, c, h, w], "dtype": dtype_name, "ms": interleaved_medians(fns, x, s)})
                del x, mask
    finally:
        _triton.LANES, _triton.UNITS_PER_THREAD = saved
    return rows


def _with_tiles(fn: Callable, lanes: int, per_thread: int) -> Callable:
    from dropblock import _triton

    def call(t: torch.Tensor):
        _triton.LANES, _triton.UNITS_PER_THREAD = lanes, per_thread
        return fn(t)
    return call


def sweep_table(rows: list[dict]) -> Table:
    table = Table(title="Triton tiles: median ms, forward (tile units/units per thread); ratio to the floor",
                  title_justify="left")
    table.add_column("dtype")
    table.add_column("CxHxW")
    table.add_column("floor", justify="right")
    for lanes, per_thread in SWEEP:
        table.add_column(f"{lanes}/{per_thread} batch | expected", justify="right")
    for r in rows:
        floor = r["ms"].get(FLOOR)
        cells = []
        for lanes, per_thread in SWEEP:
            b, e = (r["ms"].get(f"{name} {lanes}/{per_thread}") for name in (OURS, OURS_EXPECTED))
            cells.append(f"{fmt_x(ratio(b, floor))} | {fmt_x(ratio(e, floor))}")
        table.add_row(r["dtype"], "x".join(map(str, r["shape"][1:])), fmt_ms(floor), *cells)
    return table
