"""dropblock.viz.display: panels reduced to display resolution from exact full-resolution masks."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from dropblock.viz.masks import _draw_show
from dropblock.viz.display import dropped_fraction, extent, mask_panels, masked_panel, reduction_factor
from dropblock.viz.style import COLORS, DIM, DROPPED_ALPHA
from figures import block_keep, random_image


def box_mean_reference(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over each k x k box of an (H, W, C) array, edge boxes over their real pixels (float64)."""
    h, w = a.shape[:2]
    out = np.zeros((-(-h // k), -(-w // k), a.shape[2]))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = a[i * k:(i + 1) * k, j * k:(j + 1) * k].reshape(-1, a.shape[2]).mean(axis=0)
    return out


def test_at_full_resolution_the_panels_are_the_per_pixel_definitions():
    image = random_image(30, 41)
    keep, _ = block_keep(30, 41, 5, 4)
    mean, overlay, masked = mask_panels(image, keep, 1)
    assert np.array_equal(mean, image)
    assert np.array_equal(masked, image * keep[:, :, None])
    fill = np.array(to_rgb(COLORS["dropped"])) * 255
    want = image * DIM
    want[~keep] = want[~keep] * (1 - DROPPED_ALPHA) + fill * DROPPED_ALPHA
    assert np.abs(overlay.astype(float) - want).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("h, w, k", [(60, 90, 4), (61, 97, 6), (25, 25, 25)])
def test_reduced_panels_are_box_means_of_the_full_resolution_ones(h, w, k):
    """Edge boxes (H, W not multiples of k) average their real pixels; rounding costs at most one level."""
    image = random_image(h, w, seed=3)
    keep = np.random.default_rng(4).random((h, w)) >= 0.3
    _, _, masked = mask_panels(image, keep, k)
    assert masked.shape == (-(-h // k), -(-w // k), 3)
    assert np.abs(masked - box_mean_reference(image * keep[:, :, None], k)).max() <= 1.0
    frac = dropped_fraction(keep, k)
    assert np.abs(frac - box_mean_reference((~keep)[:, :, None].astype(float), k)).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(masked_panel(image, keep, k), masked)


def test_a_block_never_vanishes_and_never_grows():
    """A 1-pixel drop still tints its box; boxes away from a block show nothing dropped."""
    keep = np.ones((80, 80), bool)
    keep[37, 53] = False  # one pixel, in box (4, 6) at k = 8
    keep[0:16, 0:16] = False  # a 16-pixel block covering boxes (0..1, 0..1) exactly
    frac = dropped_fraction(keep, 8)[:, :, 0]
    assert frac[4, 6] > 0
    assert np.all(frac[:2, :2] == 1.0)
    touched = np.zeros_like(frac, bool)
    touched[4, 6] = touched[:2, :2] = True
    assert np.all(frac[~touched] == 0)


def test_reduction_factor_fits_the_panel_and_extent_maps_boxes_to_image_pixels():
    assert reduction_factor(300, 451, (4.0, 2.66), 150) == 1
    k = reduction_factor(6000, 8000, (4.0, 3.0), 150)
    assert 8000 / k <= 600 and 8000 / (k - 1) > 600
    left, right, bottom, top = extent(61, 97, 6)
    assert (left, top) == (-0.5, -0.5) and right == 6 * 17 - 0.5 and bottom == 6 * 11 - 0.5


def test_draw_show_draws_a_large_image_at_display_resolution():
    image = np.full((1800, 2400, 3), 200, np.uint8)
    keep = np.ones((1800, 2400), bool)
    keep[100:400, 200:500] = False
    fig = _draw_show(image, keep, dpi=100)
    shapes = [ax.images[0].get_array().shape for ax in fig.axes[:3]]
    assert all(s[1] <= 4.0 * 100 and s[0] < 1800 for s in shapes), shapes
    masked = fig.axes[2].images[0].get_array()
    k = 2400 // masked.shape[1] + (2400 % masked.shape[1] > 0)
    dark = np.argwhere(np.asarray(masked)[:, :, 0] == 0)  # boxes wholly inside the dropped block
    assert dark.min(axis=0).tolist() == [-(-100 // k), -(-200 // k)]
    assert dark.max(axis=0).tolist() == [400 // k - 1, 500 // k - 1]
