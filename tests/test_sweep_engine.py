"""dropblock.sweep_engine: several layers per image, and the input series, each checked against an
independent computation (plain forward passes with a hook, masks drawn from the documented seeds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SAMPLES, pretrained_one_thread
from dropblock.effect import apply_mask, kl_divergence, mask_scale
from dropblock.methods import draw_mask
from dropblock.models import preprocess
from dropblock.sweep import Setting, content_id, setting_seed, settings_grid
from dropblock.sweep_engine import sweep_image
from dropblock.sweep_engine import (ImageInput, images_per_pass, mask_cost, rows_per_image, sweep_group,
                                     sweep_layers)

MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def model():
    yield from pretrained_one_thread(MODEL)


@pytest.fixture(scope="module")
def photo():
    with Image.open(SAMPLES / "chelsea.jpg") as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8), content_id(SAMPLES / "chelsea.jpg")


def _plain(model, x, layer=None, edit=None) -> torch.Tensor:
    """(K,) float64 logits of one plain pass, the layer's output replaced by edit(output) when given."""
    handle = None
    if edit is not None:
        handle = model.get_submodule(model.layer_paths[layer]).register_forward_hook(lambda m, a, out: edit(out))
    try:
        with torch.no_grad():
            return model(x)[0].double()
    finally:
        if handle is not None:
            handle.remove()


def test_rows_of_a_layer_do_not_depend_on_the_other_layers(model, photo):
    """Each layer's rows (and its clean reference) come from its own call: two layers in one call give what
    two one-layer calls give. Fails if a layer's rows were computed against another layer's clean pass
    through a different batch, or if masks depended on the layer order."""
    pixels, content = photo
    grid = settings_grid(["dropblock", "dropout"], [1, 7], [1.0, 0.8])
    both = sweep_image(model, pixels, ["head", "blocks.10"], grid, masks=3, seed=2, content=content, name="c")
    assert [(r.layer, r.setting) for r in both] == [(layer, s) for layer in ("head", "blocks.10") for s in grid]
    for layer in ("blocks.10", "head"):
        alone = sweep_image(model, pixels, layer, grid, masks=3, seed=2, content=content, name="c")
        for a, b in zip(alone, [r for r in both if r.layer == layer]):
            assert (a.setting, a.drop_rate, a.agreement) == (b.setting, b.drop_rate, b.agreement)
            assert a.kl == pytest.approx(b.kl, rel=1e-6, abs=1e-12)


def test_input_cutout_equals_plain_passes_of_cut_crops_and_is_the_same_at_every_layer(model, photo):
    """cutout-input: N Cutout masks on the (1, 3, 224, 224) input drawn in order from the setting's seed,
    cut pixels 0 (the normalized mean), each crop through the whole network. Fails if the crop were cut
    after the layer, if the masks came from another seed, or if the rows differed between layers."""
    pixels, content = photo
    s = Setting("cutout-input", None, 0.7)
    rows = sweep_layers(model, pixels, {"blocks.4": [s], "head": [s]}, masks=4, seed=9, content=content, label=282)
    assert rows[0].kl == rows[1].kl and rows[0].agreement == rows[1].agreement
    x, _ = preprocess(MODEL, pixels)
    gen = torch.Generator().manual_seed(setting_seed(9, content, s))
    clean = _plain(model, x)
    kls, top1, rates = [], [], []
    for _ in range(4):
        draw = draw_mask("cutout", (1, 3, 224, 224), 0.3, generator=gen)
        after = _plain(model, x * draw.keep)
        kls.append(float(kl_divergence(clean, after)))
        top1.append(int(after.argmax()))
        rates.append(draw.drop_rate)
    assert rows[0].drop_rate == pytest.approx(np.mean(rates), abs=1e-12) and 0 < rows[0].drop_rate < 1
    assert rows[0].kl == pytest.approx(np.mean(kls), rel=1e-4, abs=1e-7) and rows[0].kl > 0
    assert rows[0].agreement == np.mean([t == int(clean.argmax()) for t in top1])
    assert rows[0].accuracy == np.mean([t == 282 for t in top1])


def test_input_cutout_with_dropblock_equals_plain_passes_with_both(model, photo):
    """cutout-input+dropblock: mask i cuts the input as cutout-input's mask i and drops blocks at the layer as
    DropBlock's mask i at the same block size and keep_prob (their seeds), kept units rescaled. Fails if
    either part were left out, or applied at its own rate twice."""
    pixels, content = photo
    s = Setting("cutout-input+dropblock", 3, 0.8)
    (row,) = sweep_layers(model, pixels, {"blocks.8": [s]}, masks=3, seed=4, content=content, gamma="exact")
    x, _ = preprocess(MODEL, pixels)
    cut = torch.Generator().manual_seed(setting_seed(4, content, Setting("cutout-input", None, 0.8)))
    block = torch.Generator().manual_seed(setting_seed(4, content, Setting("dropblock", 3, 0.8)))
    clean = _plain(model, x)
    kls, rates = [], []
    for _ in range(3):
        hole = draw_mask("cutout", (1, 3, 224, 224), 0.2, generator=cut)
        d = draw_mask("dropblock", (1, 112, 14, 14), 0.2, block_size=3, gamma="exact", generator=block)
        after = _plain(model, x * hole.keep, "blocks.8",
                       lambda f, d=d: apply_mask(f, d.keep, mask_scale("dropblock", d.keep, 0.2)))
        kls.append(float(kl_divergence(clean, after)))
        rates.append(d.drop_rate)
    assert row.drop_rate == pytest.approx(np.mean(rates), abs=1e-12)
    assert row.kl == pytest.approx(np.mean(kls), rel=1e-4, abs=1e-7)


def test_progress_counts_each_mask_at_its_cost(model, photo):
    """The progress bar's units: a feature-map mask costs the share of the network after the layer, an input
    mask a whole pass (and the combination both). Fails if the input series were counted as cheap as a
    feature-map mask (the bar's time estimate would then be wrong by the prefix's cost)."""
    pixels, content = photo
    settings = [Setting("dropout", None, 0.9), Setting("cutout-input", None, 0.9),
                Setting("cutout-input+dropblock", 1, 0.9), Setting("dropout", None, 1.0)]
    share = {"blocks.12": 0.25}
    calls = []
    sweep_layers(model, pixels, {"blocks.12": settings}, masks=2, seed=0, content=content, progress=calls.append,
                 cost=lambda layer, s: mask_cost(s, share[layer]))
    assert sum(calls) == pytest.approx(2 * (0.25 + 1.0 + 1.25 + 0.0))


def test_a_group_of_images_shares_each_layers_pass_and_equals_each_image_alone(model):
    """Three photos' edits at a layer go through one pass of 3 images (the model sees a batch of 3), and each
    image's rows equal those of the image alone: the same settings, masks and drop rates, KL and agreement up
    to the last float bits. The input series run per image, as alone. Fails if an image's rows were another's,
    if its clean reference came from another image, or if the images did not share the pass."""
    images = []
    for name in ("chelsea", "coffee", "astronaut"):
        with Image.open(SAMPLES / f"{name}.jpg") as im:
            images.append(ImageInput(np.asarray(im.convert("RGB")), content_id(SAMPLES / f"{name}.jpg"), name, 282))
    grid = [*settings_grid(["dropblock", "dropout"], [3], [1.0, 0.8]), Setting("cutout-input", None, 0.8),
            Setting("cutout-input+dropblock", 3, 0.8)]
    todo = {"blocks.8": grid, "head": grid}
    batches = []
    handle = model.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        together = sweep_group(model, images, todo, masks=2, seed=1)
    finally:
        handle.remove()
    assert 3 in batches
    for image, rows in zip(images, together):
        alone = sweep_layers(model, image.pixels, todo, masks=2, seed=1, content=image.content, name=image.name,
                             label=282)
        assert [(r.image, r.layer, r.setting, r.masks, r.drop_rate) for r in rows] == \
            [(r.image, r.layer, r.setting, r.masks, r.drop_rate) for r in alone]
        for a, b in zip(alone, rows):
            assert (a.agreement, a.accuracy) == (b.agreement, b.accuracy)
            assert a.kl == pytest.approx(b.kl, rel=1e-5, abs=1e-9)


def test_images_per_pass_fills_a_batch_with_whole_images():
    """Each image brings its unedited row and masks x feature-map settings below keep_prob 1."""
    grid = settings_grid(["dropblock", "dropout", "cutout-input"], [1, 7], [1.0, 0.9])  # 3 live settings
    assert rows_per_image(grid, masks=2) == 7
    assert images_per_pass(grid, masks=2) == 32 // 7
    assert images_per_pass(grid, masks=2, batch_size=64) == 64 // 7
    assert images_per_pass(grid, masks=16) == 1
    assert images_per_pass([Setting("cutout-input", None, 0.9), Setting("dropout", None, 1.0)], masks=2) == 1
