"""Image panels at the resolution they are shown at, computed exactly from full-resolution masks.

A 48-megapixel photo shown in a 4-inch panel needs about 600 pixels across, not 8000. Masks stay
exact at full resolution (the realized drop rate counts them there); each panel is reduced by an
integer factor ``k`` with k x k box means (Pillow's C reduction, rounded to whole levels), so a display pixel shows the mean of the image
pixels under it and the fraction of them that were dropped. A block never vanishes (a block
smaller than a box still tints it) and never grows (a box is at most one display pixel). The
work runs in bands of rows, so memory stays a few bands above the arrays themselves.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import to_rgb

from dropblock.viz.style import COLORS, DIM, DROPPED_ALPHA

_BAND_PIXELS = 1 << 22  # pixels per band of rows (about 12 MB of RGB)


def reduction_factor(height: int, width: int, panel_in: tuple[float, float], dpi: float) -> int:
    """The integer k that brings an H x W image to at most the panel's ``(width, height)`` inches
    at ``dpi`` dots per inch (1 when it already fits)."""
    px_w, px_h = max(1.0, panel_in[0] * dpi), max(1.0, panel_in[1] * dpi)
    return max(1, math.ceil(max(width / px_w, height / px_h)))


def _reduce(a: np.ndarray, k: int) -> np.ndarray:
    """(R, W[, 3]) uint8 -> (ceil(R / k), ceil(W / k)[, 3]) uint8 means over k x k boxes (edge boxes
    over their real pixels), rounded; Pillow's C box reduction."""
    from PIL import Image

    return a if k == 1 else np.asarray(Image.fromarray(a).reduce(k))


def _bands(height: int, width: int, k: int):
    """Row slices of whole k-row boxes, each about _BAND_PIXELS pixels."""
    step = k * max(1, _BAND_PIXELS // (k * width))
    return [slice(top, min(height, top + step)) for top in range(0, height, step)]


def reduced_image(image: np.ndarray, k: int) -> np.ndarray:
    """An (H, W, 3) uint8 image reduced by k x k box means: (ceil(H / k), ceil(W / k), 3) uint8."""
    return _reduce(image, k)


def masked_panel(image: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    """``image * keep`` reduced by ``k``: (ceil(H / k), ceil(W / k), 3) uint8."""
    return np.concatenate([_reduce(image[rows] * keep[rows][:, :, None], k) for rows in _bands(*keep.shape, k)])


def dropped_fraction(keep: np.ndarray, k: int) -> np.ndarray:
    """The fraction of each k x k box that ``keep`` drops: (ceil(H / k), ceil(W / k), 1) float32 in [0, 1]."""
    boxes = [_reduce(np.where(keep[rows], np.uint8(0), np.uint8(255)), k) for rows in _bands(*keep.shape, k)]
    return np.concatenate(boxes).astype(np.float32)[:, :, None] / 255.0


def mask_panels(image: np.ndarray, keep: np.ndarray, k: int,
                image_reduced: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three panels of a mask figure, reduced by ``k``: (image, mask overlay, masked image), each
    (ceil(H / k), ceil(W / k), 3) uint8. ``image_reduced``: :func:`reduced_image`, when already made.

    The overlay is the image dimmed to DIM with the dropped pixels filled in COLORS['dropped'] at
    DROPPED_ALPHA; averaged over a box, the fill's weight is the box's dropped fraction. At k == 1
    these are exactly the per-pixel panels.
    """
    mean = reduced_image(image, k) if image_reduced is None else image_reduced
    masked = masked_panel(image, keep, k)
    kept = masked.astype(np.float32)
    fill = np.array(to_rgb(COLORS["dropped"]), np.float32) * 255.0
    overlay = (DIM * (kept + (mean.astype(np.float32) - kept) * (1.0 - DROPPED_ALPHA))
               + fill * DROPPED_ALPHA * dropped_fraction(keep, k))
    return mean, np.clip(np.rint(overlay), 0, 255).astype(np.uint8), masked


def extent(height: int, width: int, k: int) -> tuple[float, float, float, float]:
    """imshow extent that puts a k-reduced panel on the full image's pixel coordinates (edge boxes
    reach past the image; the axes limits cut them at its border)."""
    return (-0.5, k * -(-width // k) - 0.5, k * -(-height // k) - 0.5, -0.5)
