"""Random settings through every backend: random shapes, blocks, p, gammas, rescales, dtypes and memory layouts.

For each: every backend's output is finite; the C helper, NumPy and torch give the same output bit for
bit from the same generator state; every output (Triton's included, which draws its own seeds) drops
whole blocks of valid seeds and scales the kept units as its rescale says.
"""

import random

import pytest
import torch

from conftest import assert_blocks_of_valid_seeds, assert_kept_units_scaled, scale_of_draw, triton_device
from dropblock import _native
from dropblock.functional import RESCALES, drop_block2d

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided"]
SEED_LISTS = ["c", "numpy", "torch"] if _native.blocks is not None else ["numpy", "torch"]
FIXED = [  # (N, C, H, W), block, p, gamma, rescale, dtype, layout, shared: cases that once went wrong
    ((2, 3, 8, 8), 8, 0.5, "paper", "sample", torch.float16, "contiguous", False),  # all of a sample dropped: was NaN
    ((2, 3, 8, 8), 8, 0.5, "paper", "sample", torch.float16, "contiguous", True),
    ((1, 1, 1, 1), 3, 0.9, "exact", "batch", torch.bfloat16, "strided", False),
    ((3, 2, 5, 7), 2, 0.95, 1.0, "batch", torch.float16, "channels_last", True),  # everything dropped
]


def random_case(k: int):
    rng = random.Random(k)
    h, w = rng.randint(1, 24), rng.randint(1, 24)
    return ((rng.randint(1, 3), rng.randint(1, 4), h, w), rng.randint(1, max(h, w) + 2),
            rng.choice([0.05, 0.2, 0.5, round(rng.uniform(0.01, 0.99), 3)]),
            rng.choice(["paper", "exact", round(rng.uniform(0.0, 0.5), 3)]), rng.choice(RESCALES),
            rng.choice(DTYPES), rng.choice(LAYOUTS), rng.random() < 0.3)


def make_input(shape, dtype, layout, seed):
    """Finite, never 0 (a dropped unit is then one that reads 0), of both signs, in the given layout."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    x = (torch.rand(n, c, h, 2 * w, generator=g) + 0.5) * (torch.randint(0, 2, (n, c, h, 2 * w), generator=g) * 2 - 1)
    x = x.to(dtype)
    if layout == "strided":
        return x[..., ::2]
    x = x[..., :w].contiguous()
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("case", FIXED + [random_case(k) for k in range(60)],
                         ids=[f"fixed{k}" for k in range(len(FIXED))] + [f"random{k}" for k in range(60)])
def test_every_backend_is_finite_and_exact(case, monkeypatch):
    shape, b, p, gamma, rescale, dtype, layout, shared = case
    x = make_input(shape, dtype, layout, seed=len(str(case)))
    kwargs = dict(gamma=gamma, rescale=rescale, shared_channels=shared)
    bh, bw = min(b, shape[2]), min(b, shape[3])
    outputs = {}
    for name in SEED_LISTS:
        monkeypatch.setenv("DROPBLOCK_BACKEND", name)
        outputs[name] = drop_block2d(x, p, b, seed=11, **kwargs)
    device = triton_device()
    if device is not None:
        monkeypatch.setenv("DROPBLOCK_BACKEND", "triton")
        outputs["triton"] = drop_block2d(x.to(device), p, b, seed=11, **kwargs).cpu()
    first = outputs[SEED_LISTS[0]]
    for name, y in outputs.items():
        assert y.dtype == dtype and y.shape == x.shape and torch.isfinite(y).all(), name
        if name in SEED_LISTS:
            assert torch.equal(y, first), f"{name} differs from {SEED_LISTS[0]}"
        dropped = y == 0
        if shared:
            assert torch.equal(dropped, dropped[:, :1].expand_as(dropped)), name
        assert_blocks_of_valid_seeds(dropped, bh, bw)
        if not dropped.all():
            assert_kept_units_scaled(y, x, scale_of_draw(y, p, b, rescale, shared, gamma))
