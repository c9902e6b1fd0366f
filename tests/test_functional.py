import pytest
import torch

from dropblock.functional import cutout, drop_block2d, dropout, spatial_dropout
from dropblock.gamma import expected_drop_rate, gamma_paper
from conftest import masked_by_own_draw, needs_cuda


def x4(*shape, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) + 0.5).to(dtype=dtype, device=device)


def test_identity_when_not_training_or_p_is_zero():
    x = x4(2, 3, 14, 14)
    assert drop_block2d(x, 0.3, 5, training=False) is x
    assert drop_block2d(x, 0.0, 5) is x
    assert dropout(x, 0.3, training=False) is x
    assert cutout(x, 1, 4, training=False) is x


@pytest.mark.parametrize("rescale", ["batch", "sample", "expected", "none"])
def test_rescale_modes(rescale):
    x = torch.ones(4, 8, 14, 14)
    gen = torch.Generator().manual_seed(0)
    y = drop_block2d(x, 0.2, 5, rescale=rescale, generator=gen)
    kept = y != 0
    values = y[kept].unique()
    assert values.numel() == 1 or rescale == "sample"
    if rescale == "batch":
        assert values.item() == pytest.approx(y.numel() / kept.sum().item(), rel=1e-6)
        assert y.mean().item() == pytest.approx(1.0, rel=1e-5)
    elif rescale == "sample":
        for n in range(4):
            assert y[n].mean().item() == pytest.approx(1.0, rel=1e-5)
    elif rescale == "expected":
        assert values.item() == pytest.approx(1 / (1 - expected_drop_rate(gamma_paper(0.2, 5, 14), 5, 14)), rel=1e-6)
    else:
        assert values.item() == 1.0


def test_output_is_input_times_the_mask_and_gradients_flow():
    x = x4(2, 3, 10, 10).requires_grad_()
    y = drop_block2d(x, 0.3, 3, generator=torch.Generator().manual_seed(1))
    y.sum().backward()
    keep = y.detach() != 0
    scale = keep.numel() / (1e-6 + keep.sum().item())
    assert torch.allclose(x.grad, keep.float() * scale)
    assert torch.allclose(y.detach()[keep], x.detach()[keep] * scale)


def test_inplace_changes_the_input_and_returns_it():
    x = x4(2, 3, 10, 10)
    y = drop_block2d(x, 0.3, 3, inplace=True, generator=torch.Generator().manual_seed(1))
    assert y is x and (x == 0).any()
    z = dropout(x4(2, 3, 10, 10), 0.3, inplace=True)
    assert (z == 0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_are_kept(dtype):
    x = x4(2, 4, 12, 12, dtype=dtype)
    for y in (drop_block2d(x, 0.2, 3), dropout(x, 0.2), spatial_dropout(x, 0.2), cutout(x, 1, 4)):
        assert y.dtype == dtype and y.shape == x.shape


def test_same_generator_seed_same_output():
    x = x4(2, 4, 20, 20)
    a = drop_block2d(x, 0.2, 5, generator=torch.Generator().manual_seed(3))
    b = drop_block2d(x, 0.2, 5, generator=torch.Generator().manual_seed(3))
    c = drop_block2d(x, 0.2, 5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_shared_channels_drop_the_same_units_in_every_channel():
    y = drop_block2d(torch.ones(2, 6, 14, 14), 0.3, 3, shared_channels=True)
    zero = y == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))


def test_positional_signature_matches_torchvision():
    x = x4(1, 2, 9, 9)
    y = drop_block2d(x, 0.2, 3, False, 1e-6, True)
    assert y.shape == x.shape


@pytest.mark.parametrize("call, match", [
    (lambda x: drop_block2d(x, 1.0, 3), r"^p must be in \[0, 1\)"),
    (lambda x: drop_block2d(x, -0.2, 3), r"^p must be in \[0, 1\)"),
    (lambda x: drop_block2d(x, 0.1, 0), r"^block_size must be an integer >= 1, got 0"),
    (lambda x: drop_block2d(x, 0.1, 2.5), r"^block_size must be an integer >= 1, got 2.5"),
    (lambda x: drop_block2d(x[0], 0.1, 3), r"^input must be 4-D \(N, C, H, W\), got shape \(2, 9, 9\)"),
    (lambda x: drop_block2d(x.long(), 0.1, 3), r"^input must be a floating tensor"),
    (lambda x: drop_block2d(x, 0.1, 3, rescale="mean"), r"^rescale must be one of"),
    (lambda x: cutout(x, 0, 3), r"^n_holes must be an integer >= 1"),
])
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call(x4(1, 2, 9, 9))


def test_dropout_and_spatial_dropout_scale_kept_units():
    x = torch.ones(4, 16, 8, 8)
    y = dropout(x, 0.25)
    assert torch.allclose(y.unique(), torch.tensor([0.0, 1 / 0.75]))
    s = spatial_dropout(x, 0.5, generator=torch.Generator().manual_seed(0))
    per_channel = s.reshape(4, 16, -1)
    assert torch.all(per_channel.amin(-1) == per_channel.amax(-1))  # whole channels


def test_cutout_zeroes_one_square_in_all_channels_without_rescaling():
    y = cutout(torch.ones(1, 3, 30, 30), 1, 6, generator=torch.Generator().manual_seed(2))
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y[:, 0], y[:, 2])


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_the_math_and_is_reproducible(dtype):
    from dropblock.measure import measure_dropblock
    from stats import assert_close_se

    x = x4(8, 16, 14, 14, dtype=dtype, device="cuda")
    a = drop_block2d(x, 0.1, 7, generator=torch.Generator("cuda").manual_seed(1))
    b = drop_block2d(x, 0.1, 7, generator=torch.Generator("cuda").manual_seed(1))
    assert a.device.type == "cuda" and a.dtype == dtype and torch.equal(a, b)
    m = measure_dropblock(0.1, 7, 14, 14, samples=200000, device="cuda", seed=0)
    expected = expected_drop_rate(gamma_paper(0.1, 7, 14), 7, 14)
    assert_close_se(m.mean, expected, m.se, what="cuda drop rate")


# ---- the fast paths give exactly what a dense mask gives -------------------------------------------

from dropblock.masks import (  # noqa: E402
    block_corners, block_indices, fill_blocks, paint_blocks, seed_positions, union_size,
)
from dropblock.sampling import grid_to_map  # noqa: E402


@pytest.mark.parametrize("planes,h,w,bh,bw,gamma", [
    (64, 14, 14, 7, 7, 0.006), (16, 28, 20, 4, 3, 0.02), (300, 9, 9, 3, 3, 0.01), (8, 56, 56, 7, 7, 0.003),
    (40, 7, 7, 7, 7, 0.3), (30, 6, 9, 1, 1, 0.2), (5, 12, 12, 5, 2, 0.5), (3, 10, 10, 3, 3, 0.0),
    (4, 9, 150, 3, 70, 0.05), (6, 5, 64, 2, 64, 0.5), (3, 4, 200, 4, 129, 0.3),  # rows of several words
])
def test_union_size_counts_the_units_the_blocks_cover(planes, h, w, bh, bw, gamma, backend):
    gen = torch.Generator().manual_seed(0)
    seeds = seed_positions(planes, h, w, bh, bw, gamma, device=torch.device("cpu"), generator=gen)
    dense = paint_blocks(torch.ones(planes, h, w, dtype=torch.bool), seeds, h, w, bh, bw)
    corners = grid_to_map(seeds, h, w, bh, bw)
    assert union_size(corners.numpy(), h, w, bh, bw) == int((~dense).sum())
    assert union_size(corners, h, w, bh, bw) == int((~dense).sum())  # the tensor path (GPUs take it)


def test_block_corners_are_the_seeds_in_map_coordinates():
    h, w, bh, bw = 11, 9, 4, 3
    a = seed_positions(20, h, w, bh, bw, 0.1, device=torch.device("cpu"), generator=torch.Generator().manual_seed(5))
    b = block_corners(20, h, w, bh, bw, 0.1, device=torch.device("cpu"), generator=torch.Generator().manual_seed(5))
    rows, cols = (torch.from_numpy(b) % (h * w)) // w, torch.from_numpy(b) % w
    assert torch.equal(torch.from_numpy(b), grid_to_map(a, h, w, bh, bw))
    assert int(rows.max()) <= h - bh and int(cols.max()) <= w - bw


def test_fill_blocks_matches_per_unit_indices():
    gen = torch.Generator().manual_seed(1)
    planes, h, w, bh, bw = 12, 17, 13, 5, 4
    seeds = seed_positions(planes, h, w, bh, bw, 0.05, device=torch.device("cpu"), generator=gen)
    a = torch.ones(planes * h * w)
    corners = grid_to_map(seeds, h, w, bh, bw)
    a.index_fill_(0, block_indices(corners, w, bh, bw), 0)
    b = torch.ones(planes * h * w)
    fill_blocks(b, corners, w, bh, bw, 0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape,b", [((4, 8, 14, 14), 7), ((2, 16, 7, 7), 7), ((2, 4, 20, 12), 5), ((3, 5, 6, 6), 9)])
@pytest.mark.parametrize("rescale", ["batch", "none"])
def test_fast_paths_equal_the_dense_mask(shape, b, rescale, backend):
    x = x4(*shape)
    y = drop_block2d(x, 0.2, b, rescale=rescale, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(y, masked_by_own_draw(x, 0.2, b, 7, rescale))


def test_channels_last_input_gives_the_same_result():
    x = x4(2, 8, 14, 14)
    a = drop_block2d(x, 0.2, 5, generator=torch.Generator().manual_seed(3))
    b = drop_block2d(x.to(memory_format=torch.channels_last), 0.2, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("b", [3, 14])
def test_gradient_of_the_fast_paths_is_the_mask_times_the_scale(b, backend):
    x = x4(2, 6, 14, 14).requires_grad_()
    y = drop_block2d(x, 0.3, b, generator=torch.Generator().manual_seed(2))
    (y * 2).sum().backward()
    keep = (y.detach() != 0).float()
    scale = keep.numel() / (1e-6 + keep.sum())
    torch.testing.assert_close(x.grad, 2 * keep * scale)


def test_inplace_under_autograd_matches_out_of_place(backend):
    x = x4(2, 6, 14, 14)
    ref = drop_block2d(x, 0.3, 3, generator=torch.Generator().manual_seed(4))
    leaf = x4(2, 6, 14, 14).requires_grad_()
    y = leaf * 1.0
    out = drop_block2d(y, 0.3, 3, inplace=True, generator=torch.Generator().manual_seed(4))
    out.sum().backward()
    torch.testing.assert_close(out.detach(), ref)
    torch.testing.assert_close(leaf.grad, (ref != 0).float() * (ref[ref != 0] / x[ref != 0]).mean())
