import numpy as np
import pytest
import torch

import dropblock.masks as masks
from dropblock.gamma import (
    cutout_expected_drop_rate, cutout_probability_map, drop_probability_map, expected_drop_rate, gamma_exact, gamma_paper,
)
from dropblock.masks import (
    block_corners, block_indices, block_keep_mask, cutout_mask, dropblock_mask, dropout_mask, fill_blocks, paint_blocks,
    seed_positions, spatial_dropout_mask, union_size,
)
from dropblock.sampling import grid_to_map
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


def test_the_same_seed_gives_the_same_mask():
    a = dropblock_mask((1, 2, 20, 20), 0.2, 5, generator=torch.Generator().manual_seed(11))
    b = dropblock_mask((1, 2, 20, 20), 0.2, 5, seed=11)
    c = dropblock_mask((1, 2, 20, 20), 0.2, 5, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.keep, b.keep) and torch.equal(a.seeds, b.seeds) and not torch.equal(a.keep, c.keep)


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


# ---- the sparse helpers give exactly what a dense mask gives, on every seed-list path -----------------

@pytest.mark.parametrize("planes,h,w,bh,bw,gamma", [
    (64, 14, 14, 7, 7, 0.006), (16, 28, 20, 4, 3, 0.02), (300, 9, 9, 3, 3, 0.01), (8, 56, 56, 7, 7, 0.003),
    (40, 7, 7, 7, 7, 0.3), (30, 6, 9, 1, 1, 0.2), (5, 12, 12, 5, 2, 0.5), (3, 10, 10, 3, 3, 0.0),
    (4, 9, 150, 3, 70, 0.05), (6, 5, 64, 2, 64, 0.5), (3, 4, 200, 4, 129, 0.3),  # rows of several words
])
def test_union_size_counts_the_units_the_blocks_cover(planes, h, w, bh, bw, gamma, backend):
    corners = block_corners(planes, h, w, bh, bw, gamma, device=backend, generator=torch.Generator(backend.type).manual_seed(0))
    on_cpu = torch.as_tensor(corners).cpu()
    hs, ws = h - bh + 1, w - bw + 1
    seeds = (on_cpu // (h * w)) * (hs * ws) + (on_cpu % (h * w)) // w * ws + on_cpu % w
    dense = paint_blocks(torch.ones(planes, h, w, dtype=torch.bool), seeds, h, w, bh, bw)
    assert union_size(corners, h, w, bh, bw) == int((~dense).sum())
    assert union_size(on_cpu, h, w, bh, bw) == int((~dense).sum())  # a tensor of corners sorts on the device


def test_block_corners_are_the_seeds_in_map_coordinates():
    h, w, bh, bw = 11, 9, 4, 3
    a = seed_positions(20, h, w, bh, bw, 0.1, device=torch.device("cpu"), generator=torch.Generator().manual_seed(5))
    b = block_corners(20, h, w, bh, bw, 0.1, device=torch.device("cpu"), generator=torch.Generator().manual_seed(5))
    rows, cols = (torch.from_numpy(b) % (h * w)) // w, torch.from_numpy(b) % w
    assert torch.equal(torch.from_numpy(b), grid_to_map(a, h, w, bh, bw))
    assert int(rows.max()) <= h - bh and int(cols.max()) <= w - bw


def test_fill_blocks_matches_per_unit_indices(backend):
    gen = torch.Generator(backend.type).manual_seed(1)
    planes, h, w, bh, bw = 12, 17, 13, 5, 4
    seeds = seed_positions(planes, h, w, bh, bw, 0.05, device=backend, generator=gen)
    corners = grid_to_map(seeds, h, w, bh, bw)
    expected = torch.ones(planes * h * w, device=backend)
    expected.index_fill_(0, block_indices(corners, w, bh, bw), 0)
    for dtype in (torch.bool, torch.uint8, torch.bfloat16, torch.float32, torch.float64):
        for given in (corners, corners.cpu().numpy()):  # corners as a tensor or a NumPy array
            t = torch.ones(planes * h * w, dtype=dtype, device=backend)
            fill_blocks(t, given, w, bh, bw, 0)
            assert torch.equal(t != 0, expected != 0), dtype
