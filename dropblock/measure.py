"""Measured drop rates: draw many masks and report the mean realized drop rate with its standard error.

Works for this library's own DropBlock masks and for any installed DropBlock function called
as ``fn(x, p, block_size)`` (e.g. ``torchvision.ops:drop_block2d``).
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from dropblock._checks import check_map_size, check_positive_int, check_probability, check_seed
from dropblock.errors import one_line
from dropblock.gamma import resolve_gamma
from dropblock.masks import block_keep_mask
from dropblock.rng import make_generator
from dropblock.stats import MeanSE

Progress = Callable[[int], None]

_UNITS_PER_CHUNK = 1 << 22  # about 4M mask units per batch of masks


class ImplError(Exception):
    """An implementation given as MODULE:FUNCTION that cannot be imported or called; one-line message."""


class _Accumulator:
    """Streams the realized drop rate of (k, H, W) masks into a MeanSE."""

    def __init__(self, height: int, width: int) -> None:
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.units = height * width

    def add(self, dropped: torch.Tensor) -> None:
        """dropped: (k, H, W) bool."""
        rates = dropped.reshape(dropped.shape[0], -1).sum(dim=1, dtype=torch.float64) / self.units
        self.n += dropped.shape[0]
        self.total += float(rates.sum())
        self.total_sq += float((rates * rates).sum())

    def result(self) -> MeanSE:
        return MeanSE.from_sums(self.n, self.total, self.total_sq)


def _chunks(samples: int, height: int, width: int) -> list[int]:
    size = max(1, _UNITS_PER_CHUNK // (height * width))
    full, rest = divmod(samples, size)
    return [size] * full + ([rest] if rest else [])


def measure_dropblock(
    p: float, block_size: int, height: int, width: int, *,
    samples: int, gamma: str | float = "paper", seed: int | None = 0, device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> MeanSE:
    """Draw ``samples`` DropBlock masks with the library's own mask code and measure their drop rate."""
    p = check_probability(p)
    block_size = check_positive_int(block_size, "block_size")
    height, width = check_map_size(height, width)
    g = resolve_gamma(gamma, p, block_size, height, width)
    return measure_masks(g, block_size, height, width, samples=check_positive_int(samples, "samples"),
                         seed=None if seed is None else check_seed(seed), device=device, progress=progress)


def measure_masks(gamma: float, block_size: int, height: int, width: int, *, samples: int, seed: int | None,
                  device: str | torch.device, progress: Progress | None) -> MeanSE:
    """:func:`measure_dropblock` at seed probability ``gamma``, for arguments already checked."""
    bh, bw = min(block_size, height), min(block_size, width)
    gen = make_generator(seed, device)
    acc = _Accumulator(height, width)
    for k in _chunks(samples, height, width):
        keep, _ = block_keep_mask(k, height, width, bh, bw, gamma, device=device, generator=gen)
        acc.add(~keep)
        if progress is not None:
            progress(k)
    return acc.result()


def load_function(spec: str) -> Callable:
    """Import ``MODULE:FUNCTION`` (e.g. ``torchvision.ops:drop_block2d``), or raise ImplError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImplError(f"--impl {spec!r}: expected MODULE:FUNCTION, e.g. torchvision.ops:drop_block2d")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's environment, not a crash
        raise ImplError(f"--impl {spec!r}: cannot import {module_name!r} ({one_line(exc, with_type=True)}); is it installed?") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ImplError(f"--impl {spec!r}: {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ImplError(f"--impl {spec!r}: {attr!r} is not callable")
    return fn


def measure_function(
    fn: Callable, p: float, block_size: int, height: int, width: int, *,
    samples: int, seed: int | None = 0, device: str | torch.device = "cpu",
    progress: Progress | None = None, name: str = "the function",
) -> MeanSE:
    """Measure the drop rate of ``fn(x, p, block_size)`` on ones of shape (k, 1, H, W): a unit counts as
    dropped where the output is 0. torch's global RNG is seeded with ``seed`` and restored afterwards."""
    return measure_calls(fn, check_probability(p), check_positive_int(block_size, "block_size"),
                         *check_map_size(height, width), samples=check_positive_int(samples, "samples"),
                         seed=None if seed is None else check_seed(seed), device=device, progress=progress, name=name)


def measure_calls(
    fn: Callable, p: float, block_size: int, height: int, width: int, *,
    samples: int, seed: int | None, device: str | torch.device, progress: Progress | None, name: str,
) -> MeanSE:
    """:func:`measure_function` for arguments already checked."""
    device = torch.device(device)
    acc = _Accumulator(height, width)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        for k in _chunks(samples, height, width):
            x = torch.ones(k, 1, height, width, device=device)
            try:
                out = fn(x, p, block_size)
            except Exception as exc:
                raise ImplError(f"{name} failed on a {height}x{width} map, block {block_size}: {one_line(exc, with_type=True)}") from None
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                raise ImplError(f"{name} must return a tensor of the input's shape {tuple(x.shape)}")
            acc.add(out[:, 0] == 0)
            if progress is not None:
                progress(k)
    return acc.result()
