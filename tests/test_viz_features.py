"""dropblock.viz.features: feature-map figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dropblock import viz
from dropblock.viz import save_figure
from dropblock.viz.feature_compare import FeatureColumn, _draw_feature_compare
from dropblock.viz.features import _draw_feature_show
from figures import random_image


def feature_inputs(h: int = 7, k: int = 4):
    rng = np.random.default_rng(7)
    crop = random_image(224, 224, seed=8)
    before = rng.random((h, h))
    keep = np.ones((h, h))
    keep[1:4, 2:5] = 0
    after = before * keep / 0.8
    tcb = rng.random((k, h, h))
    tca = tcb * keep
    pb = [("tabby cat", 0.6), ("tiger cat", 0.2), ("Egyptian cat", 0.1), ("lynx", 0.05), ("a very long class name, with commas", 0.01)]
    pa = [("tiger cat", 0.4), ("tabby cat", 0.35), ("Egyptian cat", 0.1), ("lynx", 0.05), ("doormat", 0.02)]
    return crop, before, after, 1 - keep, tcb, tca, pb, pa


TITLES = {
    "image": "input + activation before",
    "mask": "DropBlock at layer 3\n18% of cells dropped",
    "after": "activation after",
    "channels": "top channels",
    "before_preds": "top-5 before",
    "after_preds": "top-5 after",
}


def test_draw_feature_show(tmp_path: Path) -> None:
    crop, before, after, drop, tcb, tca, pb, pa = feature_inputs()
    keep = np.broadcast_to(drop == 0, tcb.shape).copy()
    fig = _draw_feature_show(
        crop, before, after, drop, top_channels_before=tcb, top_channels_after=tca,
        preds_before=pb, preds_after=pa, titles=TITLES, suptitle="feature show",
        channel_ids=[5, 9, 1, 30], channel_keep=keep,
    )
    all_titles = [ax.get_title() for ax in fig.axes]
    for key in ("image", "mask", "after", "before_preds", "after_preds"):
        assert TITLES[key] in all_titles, key
    assert "ch 9" in [t_.get_text() for t_ in fig.texts]
    # titles do not collide with the suptitle or with each other
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    sup = next(t_ for t_ in fig.texts if t_.get_text() == "feature show").get_window_extent(r)
    top = [ax for ax in fig.axes if ax.get_title() in (TITLES["image"], TITLES["mask"], TITLES["after"])]
    assert len(top) == 3
    for ax in top:
        assert not ax.title.get_window_extent(r).overlaps(sup)
    labelled = [t_ for t_ in fig.texts if t_.get_text()] + [ax.title for ax in fig.axes if ax.get_title()]
    boxes = [t_.get_window_extent(r) for t_ in labelled]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "overlapping titles"
    # probabilities are written as text on the bar charts
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "60.0%" in texts and "40.0%" in texts
    # the "after" panel shows what changed: before - after per cell, on a symmetric scale
    after_ax = next(ax for ax in fig.axes if ax.get_title() == TITLES["after"])
    change = np.asarray(after_ax.images[1].get_array())
    np.testing.assert_allclose(change, before - after)
    lo, hi = after_ax.images[1].get_clim()
    assert lo == -hi == -np.abs(before - after).max()
    # the channel rows: before, the channels' own masks, after; each channel scaled by its pair's range
    rows = [ax for ax in fig.axes if ax.get_ylabel() in ("before", "mask", "after")]
    assert [ax.get_ylabel() for ax in rows] == ["before", "mask", "after"]
    b_img, m_img, a_img = (np.asarray(ax.images[0].get_array()) for ax in rows)
    h, w = tcb.shape[1:]
    for j in range(4):
        cols = slice(j * (w + 1), j * (w + 1) + w)
        assert np.array_equal(m_img[:, cols], (~keep[j]).astype(float))  # 1 = dropped
    assert np.isnan(m_img[:, w]).all()  # a blank column between channels
    assert b_img.shape == (h, 4 * (w + 1) - 1)
    for j in range(4):
        cols = slice(j * (w + 1), j * (w + 1) + w)
        lo = min(tcb[j].min(), tca[j].min())
        hi = max(tcb[j].max(), tca[j].max())
        np.testing.assert_allclose(b_img[:, cols], (tcb[j] - lo) / (hi - lo))
        np.testing.assert_allclose(a_img[:, cols], (tca[j] - lo) / (hi - lo))
    save_figure(fig, tmp_path / "feature.png", dpi=40)


def test_draw_feature_compare(tmp_path: Path) -> None:
    crop, before, after, drop, tcb, *_ = feature_inputs()
    rng = np.random.default_rng(3)
    masks = {"dropblock": np.broadcast_to(drop == 0, (6, 7, 7)), "dropout": rng.random((6, 7, 7)) > 0.1,
             "cutout": np.broadcast_to(drop == 0, (6, 7, 7))}
    cols = [
        FeatureColumn("dropblock", drop, after, "tiger cat", 0.4, "DropBlock", channel_keep=masks["dropblock"]),
        FeatureColumn("dropout", np.full((7, 7), 0.1), before * 0.9, "tabby cat", 0.55, "dropout",
                      channel_keep=masks["dropout"]),
        FeatureColumn("cutout", drop, after, "a very long label that will be cut short", 0.3, "Cutout",
                      channel_keep=masks["cutout"]),
    ]
    channels = np.random.default_rng(4).random((6, 7, 7))
    fig = _draw_feature_compare(crop, cols, act_before=before, top1_before=("tabby cat", 0.6),
                                 channels_before=channels, channel_ids=[4, 8, 15, 16, 23, 42], suptitle="compare")
    titles = [ax.get_title() for ax in fig.axes] + [ax.get_title(loc="left") for ax in fig.axes]
    assert "DropBlock" in titles and any("tiger cat" in t and "40.0%" in t for t in titles)
    assert any("before: tabby cat" in t for t in titles) and any("4, 8, 15, 16, 23, 42" in t for t in titles)
    # the change panels: before - after per method, on one symmetric scale
    change_axes = [ax for ax in fig.axes if ax.get_title() == "mean activation before − after"]
    assert len(change_axes) == 3
    np.testing.assert_allclose(change_axes[1].images[1].get_array(), before - before * 0.9)
    assert len({ax.images[1].get_clim() for ax in change_axes}) == 1
    # the channel-mask row: each method's own masks of the same channels, 3 tiles a row
    mask_axes = [ax for ax in fig.axes if len(ax.images) == 1 and ax.images[0].get_cmap().N == 2]
    assert len(mask_axes) == 3
    shown = np.asarray(mask_axes[1].images[0].get_array())
    assert shown.shape == (2 * 8 - 1, 3 * 8 - 1)
    assert np.array_equal(shown[8:15, 0:7], (~masks["dropout"][3]).astype(float))
    save_figure(fig, tmp_path / "fc.svg")


def _cam(after_shift: int = 1):
    from dropblock.cam import CamResult

    before = np.zeros((7, 7), np.float32)
    before[2, 3] = 1.0
    after = np.roll(before, after_shift, axis=0) * 0.8
    return CamResult("gradcam", "head", 282, "tiger cat", before, after, 4)


def test_cam_rows_draw_before_and_after_with_their_peaks(tmp_path: Path) -> None:
    crop, before, after, drop, tcb, tca, pb, pa = feature_inputs()
    cam = _cam()
    fig = _draw_feature_show(crop, before, after, drop, top_channels_before=tcb, top_channels_after=tca,
                              preds_before=pb, preds_after=pa, titles=TITLES, cam=cam)
    titled = {ax.get_title(): ax for ax in fig.axes}
    b_ax = titled["Grad-CAM at head for tiger cat, before"]
    a_ax = next(ax for t, ax in titled.items() if t.startswith("Grad-CAM after (mean of 4 masks)"))
    assert "peak (2, 3) → (3, 3)" in a_ax.get_title()
    assert np.array_equal(b_ax.images[1].get_array(), cam.before)
    assert np.array_equal(a_ax.images[1].get_array(), cam.after)
    # the peaks: a cross at the peak, a circle at the peak before; (row 2, col 3) of 7 on a 224 crop
    x, y = a_ax.get_lines()[0].get_data()
    assert (x[0], y[0]) == (pytest.approx(3.5 * 32 - 0.5), pytest.approx(3.5 * 32 - 0.5))
    assert len(a_ax.get_lines()) == 3 and len(b_ax.get_lines()) == 2
    save_figure(fig, tmp_path / "cam.png", dpi=30)
    cols = [FeatureColumn(m, drop, after, "tiger cat", 0.4, m, cam=_cam(i)) for i, m in enumerate(("dropblock", "cutout"))]
    fig = _draw_feature_compare(crop, cols, act_before=before)
    titles = [ax.get_title() for ax in fig.axes]
    assert "Grad-CAM at head for tiger cat, before" in titles
    assert sum(t.startswith("Grad-CAM after") for t in titles) == 2


def effect_of(samples: int, method: str = "dropblock", h: int = 7, k: int = 4):
    """A LayerEffect with known numbers: mask 1 dropped 11.2% (KL 0.0655), the mean of ``samples`` masks
    9.1% (KL 0.0248)."""
    from dropblock.effect import FirstMask, LayerEffect, MaskStats, Prediction
    from dropblock.stats import MeanSE

    crop, before, after, drop, tcb, tca, _, _ = feature_inputs(h, k)
    keep = drop[None] == 0
    preds = [Prediction(i, f"class {i}", 0.5 / (i + 1)) for i in range(5)]
    first = FirstMask(keep, np.array([[2.0, 3.0]]), 1.25, 0.112, after, drop, tca, preds[::-1], 0.0655)
    stat = MeanSE(0.5, 0.01, samples)
    stats = MaskStats(samples, MeanSE(0.091, 0.003, samples), MeanSE(0.0248, 0.0065, samples), stat, stat, stat)
    return LayerEffect("efficientnet-lite0", "blocks.8", (k, h, h), method, 0.1,
                       {"block_size": 3, "block": [3, 3], "gamma_mode": "paper", "shared_channels": False}, 0.01,
                       0.093, crop, before, np.arange(k), tcb, preds, first, stats)


def test_show_titles_say_which_panels_are_mask_1_of_n_and_give_the_mean():
    """With N masks, the panels after the mask show mask 1 alone: their titles say "mask 1 of N", and
    the drop rate and KL give the mean of N beside mask 1's; the CAM change panel, a mean over the masks,
    says so. With one mask, none of this clutters the titles. Fails if a title drops "mask 1 of N" or the
    mean, or if the one-mask titles claim a mean."""
    from dropblock.viz import feature_show_figure

    titles = [ax.get_title().replace("\n", " ") for ax in feature_show_figure(effect_of(16), "x.jpg",
                                                                              cam=_cam()).axes]
    mask = next(t for t in titles if "mask 1 of 16:" in t)
    assert "dropped 11.2% (mean of 16: 9.1%)" in mask.replace("\n", " ")
    assert any(t.startswith("what mask 1 of 16 changed") for t in titles)
    assert "top-5 after, KL 0.0655 nats (mask 1 of 16; mean of 16: 0.0248)" in titles
    assert "CAM before − after (mean of 4 masks)" in titles
    one = [ax.get_title() for ax in feature_show_figure(effect_of(1), "x.jpg").axes]
    assert "top-5 after, KL 0.0655 nats" in one and not any("mask 1 of" in t or "mean of" in t for t in one)
    assert any(t.startswith("what DropBlock changed") for t in one)


def test_compare_titles_say_mask_1_of_n_with_the_mean_beside_it():
    """compare --layer: each column's title gives mask 1's drop rate and KL and the mean of N; the change
    panels and top-1 bars, which show mask 1, say so. Fails if they stop saying which mask they show."""
    from dropblock.viz import feature_compare_figure

    effects = [effect_of(8, m) for m in ("dropblock", "dropout")]
    fig = feature_compare_figure(effects, "x.jpg")
    titles = [ax.get_title() for ax in fig.axes] + [ax.get_title(loc="left") for ax in fig.axes]
    heads = [t for t in titles if "mask 1 of 8: dropped 11.2%, KL 0.0655" in t]
    assert len(heads) == 2 and all("mean of 8: dropped 9.1%, KL 0.0248" in t for t in heads)
    assert titles.count("mean activation before − after (mask 1 of 8)") == 2
    assert sum(t.startswith("top-1 after (mask 1 of 8): class 4") for t in titles) == 2
    one = [ax.get_title(loc=loc) for ax in feature_compare_figure([effect_of(1)], "x.jpg").axes
           for loc in ("center", "left")]
    assert not any("mask 1 of" in t or "mean of" in t for t in one)
