"""dropblock.viz.features: feature-map figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dropblock import viz
from dropblock.viz import FeatureColumn, figure_feature_compare, figure_feature_show, save_figure
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


def test_figure_feature_show(tmp_path: Path) -> None:
    crop, before, after, drop, tcb, tca, pb, pa = feature_inputs()
    fig = figure_feature_show(
        crop, before, after, drop, top_channels_before=tcb, top_channels_after=tca,
        preds_before=pb, preds_after=pa, titles=TITLES, suptitle="feature show",
        channel_ids=[5, 9, 1, 30],
    )
    all_titles = [ax.get_title() for ax in fig.axes]
    for key in ("image", "mask", "after", "before_preds", "after_preds"):
        assert TITLES[key] in all_titles, key
    assert "ch 9" in [t_.get_text() for t_ in fig.texts]
    # titles do not collide with the suptitle or with each other
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    sup = fig._suptitle.get_window_extent(r)
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
    # the channel rows: before over after, each channel scaled by its pair's range
    rows = [ax for ax in fig.axes if ax.get_ylabel() in ("before", "after")]
    assert [ax.get_ylabel() for ax in rows] == ["before", "after"]
    b_img, a_img = (np.asarray(ax.images[0].get_array()) for ax in rows)
    h, w = tcb.shape[1:]
    assert b_img.shape == (h, 4 * (w + 1) - 1)
    for j in range(4):
        cols = slice(j * (w + 1), j * (w + 1) + w)
        lo = min(tcb[j].min(), tca[j].min())
        hi = max(tcb[j].max(), tca[j].max())
        np.testing.assert_allclose(b_img[:, cols], (tcb[j] - lo) / (hi - lo))
        np.testing.assert_allclose(a_img[:, cols], (tca[j] - lo) / (hi - lo))
    save_figure(fig, tmp_path / "feature.png", dpi=40)


def test_figure_feature_compare(tmp_path: Path) -> None:
    crop, before, after, drop, *_ = feature_inputs()
    cols = [
        FeatureColumn("dropblock", drop, after, "tiger cat", 0.4, "DropBlock"),
        FeatureColumn("dropout", np.full((7, 7), 0.1), before * 0.9, "tabby cat", 0.55, "dropout"),
        FeatureColumn("cutout", drop, after, "a very long label that will be cut short", 0.3, "Cutout"),
    ]
    fig = figure_feature_compare(crop, cols, suptitle="compare features")
    titles = [ax.get_title() for ax in fig.axes] + [ax.get_title(loc="left") for ax in fig.axes]
    assert "DropBlock" in titles and any("tiger cat" in t and "40.0%" in t for t in titles)
    # activations share one colour scale across columns
    act_clims = {ax.images[1].get_clim() for ax in fig.axes if len(ax.images) == 2 and ax.images[1].get_cmap().name == viz.ACTIVATION_CMAP}
    assert len(act_clims) == 1
    save_figure(fig, tmp_path / "fc.svg")
