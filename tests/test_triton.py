"""The Triton kernels (dropblock._triton), on CUDA where present, else on CPU tensors in Triton's interpreter.

Triton draws its own seeds (Philox in the kernel), so these tests check what every exact DropBlock
draw must satisfy instead of comparing with the seed-list backends: the dropped units form blocks of
valid seeds, kept units are x times the scale, the seeds are Bernoulli(gamma) at every valid
position, the drop rate and each unit's drop frequency are the exact ones, gradients follow the mask.
"""

import math

import pytest
import torch

from conftest import ON_TRITON, assert_blocks_of_valid_seeds, assert_kept_units_scaled, needs_cuda, scale_of_draw
from dropblock.functional import drop_block2d
from dropblock.gamma import drop_probability_map, expected_drop_rate, gamma_exact, gamma_paper
from stats import assert_can_see_bias, assert_close_se, assert_per_unit, measure_until_sharp

CASES = [  # (N, C, H, W), block: odd and even blocks, H != W, blocks clipped to the map, 1 x 1 blocks
    ((2, 3, 14, 14), 7), ((3, 2, 13, 17), 4), ((2, 2, 6, 5), 9), ((4, 3, 7, 7), 7), ((1, 2, 9, 30), 1), ((2, 1, 3, 2), 2),
    ((1, 2, 6, 90), 70),  # wider than a row word, with a block too wide for one: prefix sums
]
KINDS = [(False, torch.float32), (True, torch.bfloat16), (False, torch.float16)]  # (shared channels, dtype)


def positive(shape, dtype=torch.float32, device="cpu", seed=0):
    """Input in [0.5, 1.5): a kept unit is never 0."""
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed)) + 0.5).to(device=device, dtype=dtype)


@pytest.mark.parametrize("rescale", ["batch", "sample", "expected", "none"])
@pytest.mark.parametrize("shared,dtype", KINDS)
@pytest.mark.parametrize("shape,b", CASES)
@ON_TRITON
def test_zeros_are_blocks_of_valid_seeds_and_kept_units_are_x_times_the_scale(backend, shape, b, shared, dtype, rescale):
    x = positive(shape, dtype, backend)
    y = drop_block2d(x, 0.25, b, rescale=rescale, shared_channels=shared, generator=torch.Generator(backend.type).manual_seed(1))
    assert y.dtype == dtype and y.device.type == backend.type and y.shape == x.shape
    dropped = y == 0
    if shared:
        assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
    assert_blocks_of_valid_seeds(dropped, min(b, shape[2]), min(b, shape[3]))
    if not dropped.all():
        assert_kept_units_scaled(y, x, scale_of_draw(y, 0.25, b, rescale, shared))


@pytest.mark.parametrize("shape,b", [((1, 2, 37, 45), 5), ((1, 1, 20, 150), 7), ((3, 2, 40, 12), 20), ((2, 2, 40, 13), 4),
                                     ((1, 1, 12, 100), 40)])
@pytest.mark.parametrize("shared", [False, True])
@ON_TRITON
def test_masks_do_not_depend_on_the_tiling(backend, monkeypatch, shape, b, shared):
    """Tiles of 256 units and 8 columns force halos (rows above, columns to the left) and move most
    blocks from row words to prefix sums; the seeds are a function of the position alone, so the
    output must not change."""
    from dropblock import _triton

    x = positive(shape, device=backend)
    draw = lambda: drop_block2d(x, 0.3, b, rescale="batch", shared_channels=shared, seed=3)  # noqa: E731
    whole = draw()
    monkeypatch.setattr(_triton, "LANES", 256)
    monkeypatch.setattr(_triton, "ROW", 8)
    assert _triton.tiles(shape[0] * shape[1], *shape[2:], min(b, shape[2]), min(b, shape[3])).slot == 0
    assert torch.equal(draw(), whole) and (whole == 0).any()


@ON_TRITON
def test_seeds_are_bernoulli_independent_and_uniform_over_positions(backend):
    """With 1 x 1 blocks the dropped units are the seeds themselves."""
    planes, h, w, gamma = 3000, 20, 20, 0.05
    y = drop_block2d(torch.ones(planes, 1, h, w, device=backend), 0.05, 1, gamma=gamma, rescale="none",
                     generator=torch.Generator(backend.type).manual_seed(5))
    seeds = (y == 0)[:, 0].cpu()
    counts = seeds.sum(dim=(1, 2)).double()
    n = h * w
    mean, var = n * gamma, n * gamma * (1 - gamma)
    assert_can_see_bias(mean, math.sqrt(var / planes))
    assert_close_se(counts.mean().item(), mean, math.sqrt(var / planes), what="seeds per plane")
    assert_close_se(counts.var().item(), var, var * math.sqrt(2 / (planes - 1)), what="variance of seeds per plane")
    hits = seeds.sum(dim=0).double().view(-1)
    z = (hits - planes * gamma) / math.sqrt(planes * gamma * (1 - gamma))
    assert_close_se(float((z * z).mean()), 1.0, math.sqrt(2 / n), what="per-position chi-square / n")
    for pairs, what in (((seeds[:, :, 1:] & seeds[:, :, :-1]), "side by side"), ((seeds[:, 1:] & seeds[:, :-1]), "one above the other")):
        trials, pair_p = pairs.numel(), gamma * gamma
        assert_close_se(pairs.double().mean().item(), pair_p, math.sqrt(pair_p * (1 - pair_p) / trials * 3),
                        what=f"seed pairs {what}")
    every = drop_block2d(torch.ones(2, 1, 5, 6, device=backend), 0.5, 1, gamma=1.0, rescale="none", seed=0)
    never = drop_block2d(torch.ones(2, 1, 5, 6, device=backend), 0.5, 1, gamma=0.0, rescale="none", seed=0)
    assert (every == 0).all() and (never == 1).all()


@pytest.mark.parametrize("h,w,b,p,gamma", [(13, 10, 4, 0.3, "exact"), (9, 9, 3, 0.2, "exact"), (6, 5, 9, 0.3, "exact"),
                                           (12, 9, 5, 0.25, "paper")])
@ON_TRITON
def test_drop_rate_and_per_unit_frequencies_are_the_exact_ones(backend, h, w, b, p, gamma):
    """gamma="exact" realizes p within 4 standard errors; every unit drops with its exact probability."""
    gen = torch.Generator(backend.type).manual_seed(0)

    def draw(k):
        return (drop_block2d(torch.ones(k, 1, h, w, device=backend), p, b, gamma=gamma, rescale="none",
                             generator=gen) == 0)[:, 0].cpu()
    g = gamma_exact(p, b, h, w) if gamma == "exact" else gamma_paper(p, b, h, w)
    expected = p if gamma == "exact" else expected_drop_rate(g, b, h, w)
    mean, se, freq, n = measure_until_sharp(draw, expected, chunk=20000)
    assert_can_see_bias(expected, se)
    assert_close_se(mean, expected, se, what=f"Triton drop rate {h}x{w} b={b} p={p} gamma={gamma}")
    assert_per_unit(freq, drop_probability_map(g, b, h, w), n)


@pytest.mark.parametrize("rescale", ["batch", "sample", "expected", "none"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
@ON_TRITON
def test_gradients_follow_the_mask_and_nothing_mask_sized_is_saved(backend, rescale, shared, inplace):
    leaf = positive((3, 4, 11, 13), device=backend).requires_grad_()
    upstream = positive((3, 4, 11, 13), device=backend, seed=2)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        x = leaf * 1.0 if inplace else leaf
        y = drop_block2d(x, 0.3, 4, inplace=inplace, rescale=rescale, shared_channels=shared,
                         generator=torch.Generator(backend.type).manual_seed(4))
    assert (y is x) == inplace
    (upstream * y).sum().backward()
    factor = (y / leaf).detach()  # the scale where kept, 0 where dropped
    torch.testing.assert_close(leaf.grad, upstream * factor)
    assert max(saved, default=0) <= 3, f"saved tensors of {saved} units: the backward pass should recompute the mask"


@ON_TRITON
def test_any_memory_layout_gives_the_same_output(backend):
    x = positive((2, 6, 12, 10), device=backend)
    draw = lambda t: drop_block2d(t, 0.3, 3, rescale="sample", seed=7)  # noqa: E731
    base = draw(x)
    cl = draw(x.to(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, base)
    wide = positive((2, 6, 12, 20), device=backend)
    view = wide[..., ::2]  # every other column: not contiguous in any format
    view.copy_(x)
    assert torch.equal(draw(view), base)


@needs_cuda
@pytest.mark.parametrize("rescale", ["batch", "sample", "expected"])
def test_no_host_sync_on_cuda(monkeypatch, rescale):
    monkeypatch.setenv("DROPBLOCK_BACKEND", "triton")
    x = positive((8, 16, 28, 28), device="cuda").requires_grad_()
    drop_block2d(x, 0.1, 7, rescale=rescale).sum().backward()  # compile the kernels first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = drop_block2d(x, 0.1, 7, rescale=rescale)
        y.backward(torch.ones_like(y))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_kernels_compile_for_a_hopper_gpu_without_spilling():
    """The interpreter runs code that real GPUs cannot compile: every kernel variant must also lower to
    an sm_90 cubin (no GPU needed), with no registers spilled to local memory."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    script = Path(__file__).with_name("triton_aot.py")
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(script.parents[1]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 8 and all("LOCAL:0 " in line for line in lines), done.stdout
