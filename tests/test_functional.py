import inspect

import pytest
import torch

from conftest import EVERY_PATH, masked_by_own_draw, needs_cuda
from dropblock.functional import batch_rescale, cutout, drop_block2d, dropout, spatial_dropout
from dropblock.gamma import expected_drop_rate, gamma_paper


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


def test_batch_rescale_is_numel_over_eps_plus_kept():
    assert batch_rescale(100, 80) == 100 / (1e-6 + 80)
    assert batch_rescale(100, 0, eps=0.5) == 200.0
    torch.testing.assert_close(batch_rescale(10, torch.tensor([5.0, 10.0]), eps=0.0), torch.tensor([2.0, 1.0]))


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


@EVERY_PATH
def test_the_same_seed_gives_the_same_output(backend):
    """generator=, seed= and torch.manual_seed each reproduce a draw, on every path (Triton keys its
    Philox draw from the torch generator); the generator moves on between draws."""
    x = x4(2, 4, 20, 20, device=backend)
    a = drop_block2d(x, 0.2, 5, generator=torch.Generator(backend.type).manual_seed(3))
    assert torch.equal(a, drop_block2d(x, 0.2, 5, generator=torch.Generator(backend.type).manual_seed(3)))
    assert torch.equal(drop_block2d(x, 0.2, 5, seed=3), a)  # seed= is a generator seeded with it
    gen = torch.Generator(backend.type).manual_seed(4)
    assert not torch.equal(drop_block2d(x, 0.2, 5, generator=gen), drop_block2d(x, 0.2, 5, generator=gen))
    torch.manual_seed(5)
    b = drop_block2d(x, 0.2, 5)
    torch.manual_seed(5)
    assert torch.equal(drop_block2d(x, 0.2, 5), b) and not torch.equal(a, b)


def test_shared_channels_drop_the_same_units_in_every_channel():
    y = drop_block2d(torch.ones(2, 6, 14, 14), 0.3, 3, shared_channels=True)
    zero = y == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))


def test_positional_signature_matches_torchvision():
    """torchvision.ops.drop_block2d(input, p, block_size, inplace=False, eps=1e-06, training=True)."""
    names = list(inspect.signature(drop_block2d).parameters)[:6]
    assert names == ["input", "p", "block_size", "inplace", "eps", "training"]
    x = x4(2, 3, 9, 9)
    assert drop_block2d(x, 0.2, 3, False, 1e-6, False) is x  # training, 6th
    big_eps = float(x.numel())  # scale numel / (eps + kept) < 1: only eps can do that
    by_name = drop_block2d(x.clone(), 0.2, 3, inplace=False, eps=big_eps, training=True, seed=0)
    y = x.clone()
    out = drop_block2d(y, 0.2, 3, True, big_eps, True, seed=0)  # inplace 4th, eps 5th
    assert out is y and torch.equal(out, by_name) and 0 < by_name.max() < x.max()


@pytest.mark.parametrize("call, match", [
    (lambda x: drop_block2d(x, 1.0, 3), r"^p must be in \[0, 1\), got 1.0"),
    (lambda x: drop_block2d(x, -0.2, 3), r"^p must be in \[0, 1\), got -0.2"),
    (lambda x: drop_block2d(x, 0.1, 0), r"^block_size must be an integer >= 1, got 0"),
    (lambda x: drop_block2d(x, 0.1, 2.5), r"^block_size must be an integer >= 1, got 2.5"),
    (lambda x: drop_block2d(x[0], 0.1, 3), r"^input must be 4-D \(N, C, H, W\), got shape \(2, 9, 9\)"),
    (lambda x: drop_block2d(x.long(), 0.1, 3), r"^input must be a floating tensor"),
    (lambda x: drop_block2d(x, 0.1, 3, rescale="mean"), r"^rescale must be one of batch, sample, expected, none; got 'mean'"),
    (lambda x: drop_block2d(x, 0.1, 3, gamma=1.5), r"^gamma must be 'paper', 'exact' or a probability in \[0, 1\], got 1.5"),
    (lambda x: drop_block2d(x, 0.1, 3, gamma="median"), r"^gamma must be 'paper', 'exact' or a probability .*'median'"),
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
def test_cuda_drop_rate_matches_the_math():
    from dropblock.measure import measure_dropblock
    from stats import assert_close_se

    m = measure_dropblock(0.1, 7, 14, 14, samples=200000, device="cuda", seed=0)
    expected = expected_drop_rate(gamma_paper(0.1, 7, 14), 7, 14)
    assert_close_se(m.mean, expected, m.se, what="cuda drop rate")


# ---- every seed-list path (C helper, NumPy, torch; CPU and CUDA) gives exactly x times its own mask ----

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rescale", ["batch", "expected", "none"])
@pytest.mark.parametrize("shape,b", [((4, 8, 14, 14), 7), ((2, 16, 7, 7), 7), ((2, 4, 20, 12), 5), ((3, 5, 6, 6), 9),
                                     ((2, 4, 9, 130), 5)])
def test_output_is_the_input_times_its_own_mask(backend, dtype, rescale, shape, b):
    x = x4(*shape, dtype=dtype, device=backend)
    y = drop_block2d(x, 0.2, b, rescale=rescale, generator=torch.Generator(backend.type).manual_seed(7))
    assert y.device == x.device and y.dtype == dtype
    ref = masked_by_own_draw(x, 0.2, b, 7, rescale)
    assert torch.equal(y == 0, ref == 0)  # the same units dropped
    torch.testing.assert_close(y, ref)


def test_channels_last_input_gives_the_same_result():
    x = x4(2, 8, 14, 14)
    a = drop_block2d(x, 0.2, 5, generator=torch.Generator().manual_seed(3))
    b = drop_block2d(x.to(memory_format=torch.channels_last), 0.2, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("b", [3, 14])
@pytest.mark.parametrize("inplace", [False, True])
def test_gradient_is_the_mask_times_the_scale(backend, b, inplace):
    leaf = x4(2, 6, 14, 14, device=backend).requires_grad_()
    x = leaf * 1.0 if inplace else leaf
    y = drop_block2d(x, 0.3, b, inplace=inplace, generator=torch.Generator(backend.type).manual_seed(2))
    (y * 2).sum().backward()
    ref = masked_by_own_draw(leaf.detach(), 0.3, b, 2, "batch")
    torch.testing.assert_close(y.detach(), ref)
    keep = (ref != 0).float()
    torch.testing.assert_close(leaf.grad, 2 * keep * batch_rescale(keep.numel(), keep.sum()))
