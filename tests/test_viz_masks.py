"""dropblock.viz.masks: show and compare figures show what the masks say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dropblock.viz import COLORS
from dropblock.viz.masks import CompareColumn, _draw_compare, _draw_show
from figures import assert_png_size, axes_titled, black_agreement, block_keep, pixel_keep, random_image, save_png


@pytest.mark.parametrize("h, w", [(40, 64), (72, 40)])  # landscape and portrait
def test_draw_show_masked_panel_matches_mask(tmp_path: Path, h: int, w: int) -> None:
    image = random_image(h, w)
    keep, seeds = block_keep(h, w, block=7, n=6)
    titles = ("the image\n40 x 64", "DropBlock mask\n11.2% dropped", "masked: image x keep")
    fig = _draw_show(image, keep, seeds=seeds, titles=titles, suptitle="test")
    dpi = 100
    png = save_png(fig, tmp_path / "show.png", dpi)

    assert_png_size(png, fig, dpi)

    masked_ax = axes_titled(fig, titles[2])
    assert black_agreement(png, fig, masked_ax, keep, dpi) >= 0.97
    # the drawn array is exactly image * keep
    drawn = np.asarray(masked_ax.images[0].get_array())
    np.testing.assert_array_equal(drawn, image * keep[:, :, None])
    # the image itself is untouched
    assert image.min() >= 60


def test_draw_show_pixel_mask_and_other_dpi(tmp_path: Path) -> None:
    h, w = 36, 48
    image = random_image(h, w, seed=3)
    keep = pixel_keep(h, w, 0.2)
    fig = _draw_show(image, keep, method="dropout", titles=("a", "b", "masked"))
    dpi = 80
    png = save_png(fig, tmp_path / "show.png", dpi)
    assert_png_size(png, fig, dpi)
    assert black_agreement(png, fig, axes_titled(fig, "masked"), keep, dpi) >= 0.97


def test_draw_show_layout_is_legible() -> None:
    image = random_image(30, 90)
    keep, seeds = block_keep(30, 90, 5, 4)
    fig = _draw_show(
        image, keep, seeds=seeds,
        titles=("input\n90 x 30 px", "mask: block 5\n9.9% dropped (target 10%)", "masked\nimage x keep"),
        suptitle="a suptitle",
    )
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    fw, fh = fig.get_size_inches()
    assert 8 <= fw <= 16 and 2 <= fh <= 9
    boxes = [ax.title.get_window_extent(r) for ax in fig.axes[:3]] + [fig._suptitle.get_window_extent(r)]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (i, j)
    for ax in fig.axes[:3]:
        assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
        assert ax.images[0].get_interpolation() == "nearest"
    # seeds drawn as markers on the mask panel only
    assert len(fig.axes[1].collections) == 1
    assert len(fig.axes[1].collections[0].get_offsets()) == 4


def test_draw_show_rejects_bad_shapes() -> None:
    image = random_image(10, 12)
    with pytest.raises(ValueError, match="keep"):
        _draw_show(image, np.ones((12, 10), bool))
    with pytest.raises(ValueError, match="image"):
        _draw_show(image.astype(np.float32), np.ones((10, 12), bool))


# --------------------------------------------------------------------------- _draw_compare


def test_draw_compare_masked_row_matches_masks(tmp_path: Path) -> None:
    h, w = 40, 56
    image = random_image(h, w, seed=5)
    kb, sb = block_keep(h, w, 7, 5, seed=2)
    kd = pixel_keep(h, w, 0.1, seed=4)
    kc = np.ones((h, w), bool)
    kc[5:25, 10:30] = False
    columns = [
        CompareColumn("dropblock", kb, sb, "DropBlock\nmask", "DropBlock masked"),
        CompareColumn("dropout", kd, None, "dropout\nmask", "dropout masked"),
        CompareColumn("cutout", kc, None, "Cutout\nmask", "Cutout masked"),
    ]
    fig = _draw_compare(image, columns, suptitle="compare")
    dpi = 100
    png = save_png(fig, tmp_path / "compare.png", dpi)
    assert_png_size(png, fig, dpi)
    for col in columns:
        ax = axes_titled(fig, col.masked_title)
        assert black_agreement(png, fig, ax, col.keep, dpi) >= 0.97, col.method
    # mask panels are framed in the method colour
    from matplotlib.colors import to_hex

    frame = axes_titled(fig, "dropout\nmask").spines["top"].get_edgecolor()
    assert to_hex(frame) == COLORS["dropout"].lower()


def test_draw_compare_needs_columns() -> None:
    with pytest.raises(ValueError):
        _draw_compare(random_image(8, 8), [])
