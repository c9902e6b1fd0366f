"""Test helpers for figures: synthetic images and masks, and checks on what a saved PNG shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dropblock.viz import save_figure


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 with values 60..255: no pixel is black."""
    return np.random.default_rng(seed).integers(60, 256, (h, w, 3), dtype=np.uint8)


def block_keep(h: int, w: int, block: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A DropBlock-like mask with n square blocks, and the blocks' centres (row, col)."""
    rng = np.random.default_rng(seed)
    keep = np.ones((h, w), bool)
    rows = rng.integers(0, h - block + 1, n)
    cols = rng.integers(0, w - block + 1, n)
    for r, c in zip(rows, cols):
        keep[r : r + block, c : c + block] = False
    seeds = np.stack([rows + (block - 1) / 2, cols + (block - 1) / 2], axis=1).astype(float)
    return keep, seeds


def pixel_keep(h: int, w: int, p: float, seed: int = 1) -> np.ndarray:
    """Dropout-like mask: each pixel dropped with probability p."""
    return np.random.default_rng(seed).random((h, w)) >= p


def axes_titled(fig, title: str):
    found = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def black_agreement(png: Path, fig, ax, keep: np.ndarray, dpi: float) -> float:
    """Fraction of mask cells where 'panel pixel is black' equals 'not keep'.

    The axes' pixel box comes from the figure (after a draw), scaled from the figure's
    dpi to the save dpi; PNG rows run top-down, so y is flipped.
    """
    fig.canvas.draw()
    bb = ax.get_window_extent()
    scale = dpi / fig.dpi
    arr = np.asarray(Image.open(png).convert("RGB"))
    H = arr.shape[0]
    x0, x1 = int(round(bb.x0 * scale)), int(round(bb.x1 * scale))
    top, bottom = int(round(H - bb.y1 * scale)), int(round(H - bb.y0 * scale))
    region = arr[top:bottom, x0:x1]
    assert region.shape[0] > keep.shape[0] // 2 and region.shape[1] > keep.shape[1] // 2
    small = np.asarray(Image.fromarray(region).resize(keep.shape[::-1], Image.Resampling.NEAREST))
    black = (small.astype(int).max(axis=2) < 30)
    return float(np.mean(black == ~keep))


def assert_png_size(png: Path, fig, dpi: float) -> None:
    """The PNG is figsize * dpi pixels (Agg truncates the product to whole pixels)."""
    width, height = Image.open(png).size
    fw, fh = fig.get_size_inches()
    assert abs(width - fw * dpi) < 1 and abs(height - fh * dpi) < 1, ((width, height), (fw * dpi, fh * dpi))


def save_png(fig, path: Path, dpi: float) -> Path:
    out = save_figure(fig, path, dpi=dpi)
    assert out == path and path.exists()
    return path
