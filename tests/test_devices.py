"""The same guarantees on every device: each test runs on the CPU here and on CUDA where a GPU exists.

On CUDA the masks take the tensor code path (the CPU runs it too, through the ``backend`` fixture's
"tensor" case); these tests check that path on the device itself: the output is the input times
its own mask, gradients follow the mask, the union count is exact, and seeds are Bernoulli(gamma).
"""

import math

import pytest
import torch

from conftest import masked_by_own_draw, needs_cuda
from dropblock.functional import drop_block2d
from dropblock.masks import block_corners, paint_blocks, union_size
from dropblock.sampling import bernoulli_positions
from stats import assert_can_see_bias, assert_close_se



@pytest.fixture(params=[pytest.param("cpu", id="cpu"), pytest.param("cpu-tensor-path", id="cpu-tensor-path"),
                        pytest.param("cuda", id="cuda", marks=needs_cuda)])
def device(request, monkeypatch) -> str:
    """"cpu" (C helper or NumPy), "cpu-tensor-path" (the code GPUs run, on the CPU) and "cuda"."""
    if request.param == "cpu-tensor-path":
        import dropblock._native as native
        import dropblock.sampling as sampling

        monkeypatch.setattr(native, "blocks", None)
        monkeypatch.setattr(sampling, "NUMPY_ON_CPU", False)
        return "cpu"
    return request.param


def gen(device: str, seed: int) -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rescale", ["batch", "expected", "none"])
@pytest.mark.parametrize("shape,b", [((4, 16, 14, 14), 7), ((2, 8, 56, 56), 7), ((3, 32, 7, 7), 7),
                                     ((2, 4, 9, 130), 5)])
def test_output_is_the_input_times_its_mask(device, dtype, rescale, shape, b):
    x = (torch.rand(shape, generator=gen("cpu", 0)) + 0.5).to(device=device, dtype=dtype)
    y = drop_block2d(x, 0.15, b, rescale=rescale, generator=gen(device, 3))
    assert y.device.type == device and y.dtype == dtype
    ref = masked_by_own_draw(x, 0.15, b, 3, rescale)
    assert torch.equal(y == 0, ref == 0)  # the same units dropped
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("inplace", [False, True])
def test_gradient_is_the_mask_times_the_scale(device, inplace):
    leaf = (torch.rand(2, 12, 14, 14, generator=gen("cpu", 1)) + 0.5).to(device).requires_grad_()
    x = leaf * 1.0 if inplace else leaf
    y = drop_block2d(x, 0.3, 5, inplace=inplace, generator=gen(device, 4))
    (3 * y).sum().backward()
    ref = masked_by_own_draw(leaf.detach(), 0.3, 5, 4, "batch")
    keep = (ref != 0).float()
    scale = keep.numel() / (1e-6 + keep.sum())
    torch.testing.assert_close(leaf.grad, 3 * keep * scale)


@pytest.mark.parametrize("h,w,bh,bw,gamma", [(14, 14, 7, 7, 0.01), (56, 56, 7, 7, 0.003), (9, 130, 3, 70, 0.05)])
def test_union_size_is_exact(device, h, w, bh, bw, gamma):
    corners = block_corners(64, h, w, bh, bw, gamma, device=torch.device(device), generator=gen(device, 2))
    on_cpu = torch.as_tensor(corners).cpu()
    hs, ws = h - bh + 1, w - bw + 1
    seeds = (on_cpu // (h * w)) * (hs * ws) + (on_cpu % (h * w)) // w * ws + on_cpu % w
    dense = paint_blocks(torch.ones(64, h, w, dtype=torch.bool), seeds, h, w, bh, bw)
    assert union_size(corners, h, w, bh, bw) == int((~dense).sum())


def test_seed_counts_are_binomial(device):
    n, gamma, reps = 5000, 0.01, 2000
    g = gen(device, 7)
    counts = torch.tensor([bernoulli_positions(n, gamma, device=device, generator=g).numel() for _ in range(reps)],
                          dtype=torch.float64)
    mean, var = n * gamma, n * gamma * (1 - gamma)
    se = math.sqrt(var / reps)
    assert_can_see_bias(mean, se)
    assert_close_se(counts.mean().item(), mean, se, what=f"seed count on {device}")
    assert_close_se(counts.var().item(), var, var * math.sqrt(2 / (reps - 1)), what=f"seed count variance on {device}")


def test_positions_are_sorted_distinct_and_uniform(device):
    n, gamma, reps = 400, 0.05, 3000
    g = gen(device, 8)
    hits = torch.zeros(n, dtype=torch.float64)
    for _ in range(reps):
        pos = bernoulli_positions(n, gamma, device=device, generator=g)
        assert pos.device.type == device and bool((pos[1:] > pos[:-1]).all())
        hits[pos.cpu()] += 1
    z = (hits - reps * gamma) / math.sqrt(reps * gamma * (1 - gamma))
    assert_close_se(float((z * z).mean()), 1.0, math.sqrt(2 / n), what=f"per-position chi-square / n on {device}")
