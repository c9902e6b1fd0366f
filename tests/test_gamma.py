import itertools
import math

import numpy as np
import pytest

from dropblock.gamma import (
    GAMMA_MODES, clip_block, clip_note, cutout_expected_drop_rate, cutout_length_for, cutout_probability_map,
    drop_probability_map, drop_rate_from_counts, expected_drop_rate, gamma_exact, gamma_paper, linear_keep_prob,
    resolve_gamma, solve_gamma,
)


def brute_force_map(gamma, b, h, w):
    """Enumerate every valid seed and the units its block covers; independent of coverage_counts."""
    bh, bw = min(b, h), min(b, w)
    count = np.zeros((h, w), dtype=np.int64)
    for r, c in itertools.product(range(h - bh + 1), range(w - bw + 1)):
        count[r:r + bh, c:c + bw] += 1
    return 1 - (1 - gamma) ** count


def test_paper_gamma_matches_equation_1():
    assert gamma_paper(0.1, 7, 14) == pytest.approx(0.00625)
    assert gamma_paper(0.1, 7, 14, 14) == gamma_paper(0.1, 7, 14)
    # H x W form
    assert gamma_paper(0.2, 3, 10, 20) == pytest.approx(0.2 * 200 / (9 * 8 * 18))


def test_expected_drop_rate_of_the_papers_setting_is_below_p():
    g = gamma_paper(0.1, 7, 14)
    assert expected_drop_rate(g, 7, 14) == pytest.approx(0.0929, abs=5e-5)


@pytest.mark.parametrize("h,w,b", [(14, 14, 7), (5, 9, 2), (7, 4, 3), (6, 6, 6), (4, 5, 9), (1, 8, 3), (9, 9, 1)])
def test_drop_probability_map_matches_brute_force(h, w, b):
    g = 0.137
    np.testing.assert_allclose(drop_probability_map(g, b, h, w), brute_force_map(g, b, h, w), rtol=1e-12, atol=1e-15)
    assert expected_drop_rate(g, b, h, w) == pytest.approx(brute_force_map(g, b, h, w).mean(), rel=1e-12)


def test_edges_are_dropped_less_often_than_the_centre():
    m = drop_probability_map(gamma_paper(0.1, 7, 14), 7, 14)
    assert m[0, 0] < m[7, 7]
    assert m[0, 0] == pytest.approx(0.00625)


@pytest.mark.parametrize("p", [0.01, 0.1, 0.25, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("h,w,b", [(14, 14, 7), (28, 14, 5), (7, 7, 7), (5, 5, 9), (56, 56, 2)])
def test_exact_gamma_hits_p(p, h, w, b):
    g = gamma_exact(p, b, h, w)
    assert 0 < g < 1
    assert expected_drop_rate(g, b, h, w) == pytest.approx(p, abs=1e-12)


def test_exact_gamma_is_above_the_papers_when_blocks_overlap():
    assert gamma_exact(0.1, 7, 14) > gamma_paper(0.1, 7, 14)
    assert gamma_exact(0.0, 7, 14) == 0.0


def test_block_of_one_is_dropout():
    assert gamma_paper(0.3, 1, 10) == pytest.approx(0.3)
    assert gamma_exact(0.3, 1, 10) == pytest.approx(0.3)


def test_block_larger_than_the_map_is_clipped_per_side():
    assert clip_block(9, 5, 12) == (5, 9)
    # clipped to the whole map: a single seed position, gamma = p, drop rate = p
    assert gamma_paper(0.2, 30, 6, 6) == pytest.approx(0.2)
    assert expected_drop_rate(0.2, 30, 6, 6) == pytest.approx(0.2)


def test_unreachable_drop_rate_is_an_error():
    rows = np.array([0, 1, 1])  # the first row can never be dropped
    cols = np.array([1, 1])
    with pytest.raises(ValueError, match="unreachable"):
        solve_gamma(0.8, rows, cols)
    assert drop_rate_from_counts(solve_gamma(0.5, rows, cols), rows, cols) == pytest.approx(0.5)


@pytest.mark.parametrize("bad, name", [(1.0, "p"), (-0.1, "p"), (float("nan"), "p"), ("x", "p"), (True, "p")])
def test_bad_p_names_the_argument(bad, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        gamma_paper(bad, 7, 14)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "7", None, True])
def test_bad_block_size_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"block_size must be an integer >= 1"):
        gamma_exact(0.1, bad, 14)


def test_resolve_gamma_by_name_or_value():
    assert GAMMA_MODES == ("paper", "exact")
    assert resolve_gamma("paper", 0.1, 7, 14, 14) == gamma_paper(0.1, 7, 14)
    assert resolve_gamma("exact", 0.1, 7, 14, 14) == gamma_exact(0.1, 7, 14)
    assert resolve_gamma(0.25, 0.1, 7, 14, 14) == 0.25
    for bad in ("median", 1.5, -0.1):
        with pytest.raises(ValueError, match="gamma must be 'paper', 'exact' or a probability"):
            resolve_gamma(bad, 0.1, 7, 14, 14)


def test_clip_note_is_one_wording_and_silent_when_the_block_fits():
    assert clip_note(7, 14, 14) is None
    assert clip_note(9, 7, 7) == "block 9 is larger than the 7x7 map: clipped to 7x7"
    assert clip_note(400, 300, 451, " px", "image") == (
        "block 400 px is larger than the 300x451 image (height x width): clipped to 300x400")


def brute_force_cutout(n_holes, length, h, w):
    hit = np.zeros((h, w))
    for y, x in itertools.product(range(h), range(w)):
        m = np.zeros((h, w), dtype=bool)
        top, left = y - length // 2, x - length // 2
        m[max(top, 0):max(top + length, 0), max(left, 0):max(left + length, 0)] = True
        hit += m
    q = hit / (h * w)
    return 1 - (1 - q) ** n_holes


@pytest.mark.parametrize("n_holes,length,h,w", [(1, 4, 8, 8), (2, 3, 7, 10), (1, 20, 6, 9), (3, 1, 5, 5)])
def test_cutout_map_matches_brute_force(n_holes, length, h, w):
    np.testing.assert_allclose(cutout_probability_map(n_holes, length, h, w), brute_force_cutout(n_holes, length, h, w))


def test_cutout_erases_less_than_length_squared_over_area():
    assert cutout_expected_drop_rate(1, 16, 32, 32) < 16 * 16 / (32 * 32)


def test_cutout_length_for_is_the_closest_integer():
    h, w, p = 300, 451, 0.1
    n = cutout_length_for(p, h, w)
    best = min(range(1, 400), key=lambda k: abs(cutout_expected_drop_rate(1, k, h, w) - p))
    assert n == best
    assert abs(cutout_expected_drop_rate(1, n, h, w) - p) < 0.002


def test_linear_keep_prob_schedule():
    assert linear_keep_prob(0, 100, 0.9) == 1.0
    assert linear_keep_prob(50, 100, 0.9) == pytest.approx(0.95)
    assert linear_keep_prob(100, 100, 0.9) == pytest.approx(0.9)
    assert linear_keep_prob(10**6, 100, 0.9) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="steps"):
        linear_keep_prob(0, 0, 0.9)
    assert math.isclose(linear_keep_prob(25, 100, 0.8, start_keep_prob=0.95), 0.95 - 0.15 / 4)
