import numpy as np
import pytest
import torch

import dropblock.masks as masks
from dropblock.gamma import (
    cutout_expected_drop_rate, cutout_probability_map, drop_probability_map, expected_drop_rate, gamma_exact, gamma_paper,
)
from dropblock.masks import (
    block_keep_mask, cutout_mask, dropblock_mask, dropout_mask, paint_blocks, spatial_dropout_mask,
)
from stats import assert_close_se, assert_per_unit, measure_until_sharp

GRID = [  # (h, w, block, p, shared channels)
    (14, 14, 7, 0.1, False),   # the paper's setting
    (14, 14, 7, 0.1, True),    # one mask shared by the channels
    (28, 14, 4, 0.2, False),   # even block, H != W
    (9, 9, 8, 0.05, False),    # block close to the map
    (6, 5, 9, 0.3, False),     # block larger than the map: clipped to 6 x 5
    (20, 20, 3, 0.02, False),  # small p
    (14, 14, 5, 0.6, True),    # large p
]


def draw_dropblock(h, w, b, p, shared, gamma="paper", c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def draw(k):
        m = dropblock_mask((max(k // c, 1), c, h, w), p, b, gamma=gamma, shared_channels=shared, generator=gen)
        return ~m.keep.reshape(-1, h, w)
    return draw


@pytest.mark.parametrize("h,w,b,p,shared", GRID)
def test_measured_drop_rate_and_per_unit_frequencies_match_the_exact_map(h, w, b, p, shared):
    g = gamma_paper(p, b, h, w)
    expected = expected_drop_rate(g, b, h, w)
    mean, se, freq, n = measure_until_sharp(draw_dropblock(h, w, b, p, shared), expected)
    assert_close_se(mean, expected, se, what=f"drop rate {h}x{w} b={b} p={p}")
    assert_per_unit(freq, drop_probability_map(g, b, h, w), n)


@pytest.mark.parametrize("h,w,b,p", [(14, 14, 7, 0.1), (28, 14, 4, 0.2), (6, 5, 9, 0.3), (12, 12, 7, 0.99), (16, 16, 1, 0.5)])
def test_exact_gamma_drops_p(h, w, b, p):
    mean, se, freq, n = measure_until_sharp(draw_dropblock(h, w, b, p, False, gamma="exact"), p)
    assert_close_se(mean, p, se, what=f"exact gamma {h}x{w} b={b} p={p}")
    assert_per_unit(freq, drop_probability_map(gamma_exact(p, b, h, w), b, h, w), n)


def test_the_dense_path_paints_the_same_masks_as_the_sparse_path(monkeypatch):
    h, w, bh, bw = 17, 13, 5, 4
    gen = torch.Generator().manual_seed(5)
    seeds = masks.seed_positions(6, h, w, bh, bw, 0.2, device=torch.device("cpu"), generator=gen)
    sparse = paint_blocks(torch.ones(6, h, w, dtype=torch.bool), seeds, h, w, bh, bw)
    monkeypatch.setattr(masks, "_SPARSE_LIMIT", 0.0)
    dense = paint_blocks(torch.ones(6, h, w, dtype=torch.bool), seeds, h, w, bh, bw)
    assert torch.equal(sparse, dense)
    assert (~sparse).any()


def test_each_seed_drops_exactly_its_block():
    m = dropblock_mask((2, 4, 15, 11), 0.1, 4, generator=torch.Generator().manual_seed(3))
    bh, bw = m.block
    assert m.block == (4, 4)
    rebuilt = torch.ones_like(m.keep)
    for n, c, r, col in m.seeds.tolist():
        assert 0 <= r <= 15 - bh and 0 <= col <= 11 - bw
        rebuilt[n, c, r:r + bh, col:col + bw] = False
    assert torch.equal(rebuilt, m.keep)
    centres = m.seed_centres()
    assert torch.allclose(centres[:, 2:], m.seeds[:, 2:].double() + 1.5)


def test_a_single_block_is_exactly_b_by_b_for_even_and_odd_b():
    for b in (2, 3, 6):
        keep, seeds = block_keep_mask(1, b, b + 3, b, b, 1.0)  # gamma 1 on one row of seed positions
        assert seeds.numel() == 4 and (~keep).sum() == b * (b + 3)
        keep = paint_blocks(torch.ones(1, 10, 10, dtype=torch.bool), torch.tensor([0]), 10, 10, b, b)
        assert (~keep).sum() == b * b and not keep[0, :b, :b].any()


def test_shared_masks_are_shared_and_per_channel_masks_differ():
    gen = torch.Generator().manual_seed(0)
    shared = dropblock_mask((2, 8, 14, 14), 0.3, 3, shared_channels=True, generator=gen)
    assert shared.keep.shape == (2, 1, 14, 14)
    per = dropblock_mask((2, 8, 14, 14), 0.3, 3, generator=gen)
    assert per.keep.shape == (2, 8, 14, 14)
    assert not torch.equal(per.keep[0, 0], per.keep[0, 1])


def test_same_generator_seed_same_mask():
    a = dropblock_mask((1, 2, 20, 20), 0.2, 5, generator=torch.Generator().manual_seed(11))
    b = dropblock_mask((1, 2, 20, 20), 0.2, 5, generator=torch.Generator().manual_seed(11))
    c = dropblock_mask((1, 2, 20, 20), 0.2, 5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.keep, b.keep) and not torch.equal(a.keep, c.keep)


def test_dropout_and_spatial_dropout_rates():
    gen = torch.Generator().manual_seed(0)
    mean, se, freq, n = measure_until_sharp(lambda k: ~dropout_mask((k, 1, 8, 8), 0.1, generator=gen)[:, 0], 0.1)
    assert_close_se(mean, 0.1, se, what="dropout")
    mean, se, _, _ = measure_until_sharp(
        lambda k: ~spatial_dropout_mask((k, 4, 8, 8), 0.25, generator=gen).expand(k, 4, 8, 8).reshape(-1, 8, 8), 0.25
    )
    assert_close_se(mean, 0.25, se, what="spatial dropout")


@pytest.mark.parametrize("n_holes,length,h,w", [(1, 16, 32, 32), (2, 5, 12, 20), (1, 40, 24, 24)])
def test_cutout_rate_and_per_unit_frequency_match_the_exact_map(n_holes, length, h, w):
    gen = torch.Generator().manual_seed(0)
    expected = cutout_expected_drop_rate(n_holes, length, h, w)

    def draw(k):
        keep, centres = cutout_mask((k, 3, h, w), n_holes, length, generator=gen)
        assert keep.shape == (k, 1, h, w) and centres.shape == (k, n_holes, 2)
        return ~keep[:, 0]
    mean, se, freq, n = measure_until_sharp(draw, expected)
    assert_close_se(mean, expected, se, what="cutout")
    assert_per_unit(freq, cutout_probability_map(n_holes, length, h, w), n)


def test_cutout_hole_is_a_square_of_side_length_around_its_centre():
    keep, centres = cutout_mask((1, 1, 40, 40), 1, 7, generator=torch.Generator().manual_seed(4))
    y, x = centres[0, 0].tolist()
    expect = np.ones((40, 40), dtype=bool)
    expect[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = False
    assert np.array_equal(keep[0, 0].numpy(), expect)


@pytest.mark.parametrize("kwargs, match", [
    (dict(shape=(1, 1, 8, 8), p=1.0, block_size=3), r"^p must be in \[0, 1\), got 1.0"),
    (dict(shape=(1, 1, 8, 8), p=0.1, block_size=0), r"^block_size must be an integer >= 1, got 0"),
    (dict(shape=(1, 1, 8, 8), p=0.1, block_size=3.0), r"^block_size must be an integer >= 1, got 3.0"),
    (dict(shape=(8, 8), p=0.1, block_size=3), r"^shape must be \(N, C, H, W\)"),
    (dict(shape=(1, 1, 8, 8), p=0.1, block_size=3, gamma=1.5), r"^gamma must be"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dropblock_mask(**kwargs)
