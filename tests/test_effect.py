"""Offline tests of dropblock.effect: a regularizer on one layer's feature map and the prediction.

The pretrained EfficientNet-Lite0 is loaded once for the module; every draw uses a fixed seed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SAMPLES, pretrained_one_thread
from dropblock.effect import (
    MaskSeries, Prediction, apply_mask, effect_json, kl_divergence, layer_effect, mask_scale, top_k,
)
from dropblock.gamma import expected_drop_rate, gamma_paper
from dropblock.methods import draw_mask
from dropblock.models import class_names, forward_many, preprocess

MODEL = "efficientnet-lite0"
LAYER = "blocks.8"  # 112 x 14 x 14, mid-network


@pytest.fixture(scope="module")
def model():
    yield from pretrained_one_thread(MODEL)


def _image(name: str) -> np.ndarray:
    with Image.open(SAMPLES / name) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return _image("chelsea.jpg")


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return _image("coffee.jpg")


# --- small pieces -------------------------------------------------------------------------------

def test_top_k_orders_by_probability_with_names():
    probs = torch.zeros(1000)
    probs[[967, 281, 5]] = torch.tensor([0.5, 0.3, 0.2])
    got = top_k(probs, k=3)
    assert got == [Prediction(967, "espresso", 0.5), Prediction(281, "tabby", pytest.approx(0.3)),
                   Prediction(5, class_names()[5], pytest.approx(0.2))]
    assert [q.index for q in top_k(probs)] == [967, 281, 5, 0, 1]  # ties: lower index first


def test_mask_scale_is_what_training_uses():
    keep = torch.ones(1, 4, 5, 5, dtype=torch.bool)
    keep[0, 0, :2] = False  # 10 of 100 dropped
    assert mask_scale("dropblock", keep, 0.3) == pytest.approx(100 / 90)
    assert mask_scale("dropout", keep, 0.3) == pytest.approx(1 / 0.7)
    assert mask_scale("cutout", keep, 0.3) == 1.0
    assert mask_scale("dropblock", torch.zeros_like(keep), 0.3) == 1.0


def test_kl_divergence_is_zero_only_for_equal_logits():
    a = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kl_divergence(a, a), torch.zeros(3, dtype=torch.float64))
    b = a.clone()
    b[:, 0] += 2.0
    assert (kl_divergence(a, b) > 0).all()


# --- the mask is all that changes ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["dropblock", "dropout", "spatial-dropout", "cutout"])
def test_feature_changes_exactly_where_the_mask_says(model, chelsea, method):
    p = 0.2
    e = layer_effect(model, chelsea, LAYER, method, p, gamma="exact", seed=3)
    x, crop = preprocess(MODEL, chelsea)
    assert np.array_equal(crop, e.crop)
    c, h, w = e.feature_shape
    # The same first draw, by the same call, applied through the same editing machinery.
    draw = draw_mask(method, (1, c, h, w), p, block_size=7, gamma="exact",
                     generator=torch.Generator("cpu").manual_seed(3))
    assert np.array_equal(draw.keep[0].numpy(), e.first.keep)
    scale = mask_scale(method, draw.keep, p)
    training_scale = {"dropblock": draw.keep.numel() / draw.keep.sum().item(),  # numel / kept
                      "dropout": 1 / (1 - p), "spatial-dropout": 1 / (1 - p), "cutout": 1.0}[method]
    assert e.first.scale == scale == pytest.approx(training_scale)
    run = forward_many(model, x, LAYER, [lambda f: apply_mask(f, draw.keep, scale)], keep_features=True)
    before, after = run.feature_before[0], run.features_after[0]
    keep = draw.keep[0].expand_as(before)
    assert torch.equal(after[keep], before[keep] * scale)
    assert torch.equal(after[~keep], torch.zeros_like(after[~keep]))
    assert 0 < (~keep).sum() < keep.numel()
    # The effect's arrays are this same edit.
    idx = torch.from_numpy(e.top_channels)
    assert np.array_equal(e.channels_before, before[idx].numpy())
    assert np.array_equal(e.first.channels_after, after[idx].numpy())
    assert np.allclose(e.act_before, before.mean(0).numpy()) and np.allclose(e.first.act_after, after.mean(0).numpy())
    assert np.array_equal(e.first.drop_fraction, (~keep).float().mean(0).numpy())
    assert e.first.drop_rate == pytest.approx((~keep).float().mean().item())
    assert e.first.channels_after.shape == (8, h, w) and e.first.keep.dtype == bool
    # The per-channel masks of the top channels are the real masks of those channels.
    assert e.channel_keep.shape == (8, h, w)
    assert np.array_equal(e.channel_keep, keep[idx].numpy())
    assert len(e.draws) == 1 and torch.equal(e.draws[0][0], draw.keep) and e.draws[0][1] == scale
    probs_after = torch.softmax(run.logits_after[0].double(), -1)
    assert [q.index for q in e.first.predictions_after] == [q.index for q in top_k(probs_after)]
    assert e.first.predictions_after[0].prob == pytest.approx(probs_after.max().item(), rel=1e-5)
    assert e.first.kl == pytest.approx(kl_divergence(run.logits_before, run.logits_after).item(), rel=1e-4)
    if method in ("dropout", "spatial-dropout"):
        assert e.first.centres is None and e.gamma is None
    else:
        assert e.first.centres.ndim == 2 and e.first.centres.shape[1] == 2
        assert np.array_equal(e.first.centres, draw.centres.numpy())
        dropped0 = ~draw.keep[0, 0]  # the centres are channel 0's (DropBlock) or the shared holes' (Cutout)
        assert bool(dropped0.any()) == (len(e.first.centres) > 0)
        assert all(dropped0[int(r), int(col)] for r, col in e.first.centres)
    assert (e.gamma is not None) == (method == "dropblock")
    # The top channels really are the most active before.
    means = before.mean(dim=(1, 2))
    assert means[idx].min() >= means[[i for i in range(c) if i not in set(e.top_channels.tolist())]].max()


# --- eval mode and p = 0 -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dropblock", "dropout", "cutout"])
def test_p_zero_changes_nothing(model, coffee, method):
    e = layer_effect(model, coffee, LAYER, method, 0.0)
    assert e.first.predictions_after == e.predictions_before
    assert e.first.kl == 0.0 and e.first.drop_rate == 0.0 and e.first.scale == 1.0
    assert e.first.keep.all() and np.array_equal(e.first.act_after, e.act_before)
    assert np.array_equal(e.first.channels_after, e.channels_before)
    assert not model.training
    if method != "dropblock":
        return
    # Several draws go through the rest of the network as one batch, which may move logits in
    # the last float bits; nothing more.
    many = layer_effect(model, coffee, LAYER, method, 0.0, samples=3)
    assert many.stats.kl.mean < 1e-9 and (many.stats.drop_rate.mean, many.stats.drop_rate.se) == (0.0, 0.0)
    assert (many.stats.top1_changed.mean, many.stats.top1_changed.se) == (0.0, 0.0)
    assert [q.index for q in many.first.predictions_after] == [q.index for q in e.predictions_before]


def test_runs_in_eval_mode_and_restores_the_mode(model, coffee):
    x, _ = preprocess(MODEL, coffee)
    with torch.inference_mode():
        plain = torch.softmax(model(x)[0].double(), -1)  # eval mode: BN running stats, no dropout
    e = layer_effect(model, coffee, LAYER, "dropblock", 0.1, seed=1)
    assert not model.training
    assert_same_predictions(e.predictions_before, top_k(plain))
    assert e.predictions_before[0].index == 967  # espresso
    model.train()
    try:
        e_train = layer_effect(model, coffee, LAYER, "dropblock", 0.1, seed=1)
        assert model.training  # the caller's mode is given back
    finally:
        model.eval()
    assert_same_predictions(e_train.predictions_before, e.predictions_before)
    assert e_train.first.kl == pytest.approx(e.first.kl, rel=1e-5)


# --- seeds --------------------------------------------------------------------------------------

def test_same_seed_same_result_different_seed_different_mask(model, chelsea):
    calls = []
    kw = dict(samples=4, gamma="exact")
    a = layer_effect(model, chelsea, LAYER, "dropblock", 0.1, seed=7, progress=calls.append, **kw)
    b = layer_effect(model, chelsea, LAYER, "dropblock", 0.1, seed=7, **kw)
    c = layer_effect(model, chelsea, LAYER, "dropblock", 0.1, seed=8, **kw)
    assert calls == [1] * 4
    assert len(a.draws) == 4 and all(torch.equal(da[0], db[0]) for da, db in zip(a.draws, b.draws))
    assert a.stats.drop_rate.mean == pytest.approx(np.mean([float((~k).float().mean()) for k, _ in a.draws]))
    assert np.array_equal(a.first.keep, b.first.keep) and np.array_equal(a.first.centres, b.first.centres)
    assert np.array_equal(a.first.act_after, b.first.act_after)
    assert a.stats.kl == b.stats.kl and a.first.kl == b.first.kl and a.stats.drop_rate == b.stats.drop_rate
    assert a.first.predictions_after == b.first.predictions_after and effect_json(a) == effect_json(b)
    assert not np.array_equal(a.first.keep, c.first.keep)
    assert a.stats.kl != c.stats.kl


def test_mask_edits_are_pure_whatever_the_order_or_repetition():
    """Edit i of a MaskSeries applies mask i, the i-th draw of one generator seeded ``seed``, however
    often and in whatever order edits run; drop rates come from the masks. An edit that drew from a
    shared generator as it was called (the old MaskEdit) gives other masks when called in reverse or
    twice, and fails here."""
    shape, p = (1, 16, 9, 9), 0.2
    feature = torch.rand(shape, generator=torch.Generator().manual_seed(0)) + 0.5
    series = MaskSeries("dropblock", p, 5, block_size=3, gamma="exact", shared_channels=False, seed=11, device="cpu")
    edits = series.edits()
    backwards = {i: edits[i](feature) for i in reversed(range(5))}
    again = edits[2](feature)
    gen = torch.Generator().manual_seed(11)
    masks = [draw_mask("dropblock", shape, p, block_size=3, gamma="exact", generator=gen) for _ in range(5)]
    for i, m in enumerate(masks):
        assert torch.equal(backwards[i], apply_mask(feature, m.keep, mask_scale("dropblock", m.keep, p)))
    assert torch.equal(again, backwards[2])
    assert len({float((out == 0).float().mean()) for out in backwards.values()}) > 1  # the masks differ
    assert series.drop_rates(shape) == [m.drop_rate for m in masks]
    assert all(torch.equal(d.keep, m.keep) for d, m in zip(series.draws(shape), masks))
    fewer = MaskSeries("dropblock", p, 2, block_size=3, gamma="exact", shared_channels=False, seed=11, device="cpu")
    assert torch.equal(fewer.edits()[1](feature), backwards[1])  # mask 2 of 2 is mask 2 of 5


def test_effect_does_not_depend_on_how_forward_many_calls_the_edits(model, chelsea, monkeypatch):
    """forward_many may run an edit more than once (a check of row 0) and in any order or batching.
    With a forward_many that first runs edit 0 alone, then every edit in reverse, one per pass, the
    effect is the same as with the plain one and progress still ticks once per mask. With drop rates
    recorded per call (the old MaskEdit) there would be 5 rates for 4 masks, in the wrong order."""
    from dataclasses import replace

    import dropblock.models as models

    kw = dict(samples=4, seed=5, gamma="exact")
    plain = layer_effect(model, chelsea, LAYER, "dropblock", 0.15, **kw)
    real = models.forward_many

    def checking_backwards(net, x, layer, edits, batch_size=32, keep_features=False):
        edits = list(edits)
        real(net, x, layer, edits[:1])
        run = real(net, x, layer, edits[::-1], batch_size=1)
        return replace(run, logits_after=run.logits_after.flip(0))

    monkeypatch.setattr(models, "forward_many", checking_backwards)
    ticks = []
    odd = layer_effect(model, chelsea, LAYER, "dropblock", 0.15, progress=ticks.append, **kw)
    assert ticks == [1] * 4
    assert odd.stats.drop_rate == plain.stats.drop_rate and np.array_equal(odd.first.keep, plain.first.keep)
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(odd.draws, plain.draws))
    assert odd.stats.kl.mean == pytest.approx(plain.stats.kl.mean, rel=1e-4)
    assert odd.first.kl == pytest.approx(plain.first.kl, rel=1e-4) and np.array_equal(odd.first.act_after,
                                                                                        plain.first.act_after)
    assert odd.stats.top1_changed == plain.stats.top1_changed


# --- the paper's claim --------------------------------------------------------------------------

SAMPLES_CLAIM = 64


@pytest.mark.parametrize("image_name", ["chelsea.jpg", "coffee.jpg"])
def test_dropblock_moves_the_prediction_more_than_dropout(model, image_name):
    """Ghiasi et al.: dropout on a conv feature map removes little information (neighbours are
    correlated and the next layers fill it in); blocks remove more. At the paper's keep_prob 0.9
    (p = 0.1) and block 7 on a 14x14 map, with gamma "exact" so that both methods have the same
    expected drop rate (Equation 1 would give DropBlock only 0.093), DropBlock's mean KL is well
    above dropout's."""
    image = _image(image_name)
    kw = dict(samples=SAMPLES_CLAIM, seed=0, gamma="exact", block_size=7)
    db = layer_effect(model, image, LAYER, "dropblock", 0.1, **kw)
    do = layer_effect(model, image, LAYER, "dropout", 0.1, **kw)
    assert db.expected_drop_rate == pytest.approx(0.1) and do.expected_drop_rate == pytest.approx(0.1)
    assert abs(db.stats.drop_rate.mean - do.stats.drop_rate.mean) < 0.01
    combined_se = float(np.hypot(db.stats.kl.se, do.stats.kl.se))
    assert db.stats.kl.mean - do.stats.kl.mean > 3 * combined_se, (db.stats.kl, do.stats.kl)


# --- JSON ---------------------------------------------------------------------------------------

def test_effect_json_round_trips(model, chelsea):
    one = layer_effect(model, chelsea, LAYER, "cutout", 0.1)
    many = layer_effect(model, chelsea, LAYER, "dropblock", 0.1, samples=3)
    keys = {"method", "params", "drop_rate_target", "gamma", "expected_drop_rate", "realized_drop_rate", "scale",
            "model", "layer", "feature_shape", "predictions_before", "predictions_after", "kl_divergence", "samples"}
    stats = {"realized_drop_rate_stats", "kl_divergence_stats", "top1_before_prob_after_stats",
             "top1_changed_fraction_stats", "top1_after_prob_stats"}
    j1, j3 = effect_json(one), effect_json(many)
    assert set(j1) == keys and set(j3) == keys | stats
    for j in (j1, j3):
        assert json.loads(json.dumps(j)) == j
    assert j3["feature_shape"] == [112, 14, 14] and j3["layer"] == LAYER and j3["model"] == MODEL
    assert j3["predictions_before"][0] == {"index": one.predictions_before[0].index,
                                           "label": one.predictions_before[0].label,
                                           "prob": pytest.approx(one.predictions_before[0].prob, rel=1e-5)}
    assert j3["kl_divergence_stats"] == {"mean": many.stats.kl.mean, "se": many.stats.kl.se}
    assert j1["gamma"] is None and isinstance(j3["gamma"], float)


# --- errors -------------------------------------------------------------------------------------

def test_bad_arguments(model, chelsea):
    from dropblock.models import UnknownNameError

    with pytest.raises(ValueError, match="method"):
        layer_effect(model, chelsea, LAYER, "spatial", 0.1)
    with pytest.raises(ValueError, match="samples"):
        layer_effect(model, chelsea, LAYER, "dropout", 0.1, samples=0)
    with pytest.raises(ValueError, match="p must be"):
        layer_effect(model, chelsea, LAYER, "dropout", 1.0)
    with pytest.raises(TypeError, match="LoadedModel"):
        layer_effect(torch.nn.Linear(2, 2), chelsea, LAYER, "dropout", 0.1)
    with pytest.raises(UnknownNameError):
        layer_effect(model, chelsea, "blocks.99", "dropout", 0.1)
    with pytest.raises(ValueError, match="uint8"):
        layer_effect(model, chelsea.astype(np.float32), LAYER, "dropout", 0.1)


def test_block_larger_than_the_map_is_clipped(model, chelsea):
    """Block 9 on a 7x7 map runs as block 7: a block then covers the whole map, so every channel of every
    mask is all kept or all dropped, and gamma and the expected rate are those of block 7. Without the
    clip, gamma would be Equation 1's at block 9 (and the seed region of a 9-block on a 7-map is empty)."""
    e = layer_effect(model, chelsea, "blocks.12", "dropblock", 0.1, block_size=9, samples=8, seed=2)
    assert e.feature_shape[1:] == (7, 7) and e.params["block"] == [7, 7] and e.params["block_size"] == 9
    unclipped = 0.1 / 9 ** 2 * 7 ** 2 / (7 - 9 + 1) ** 2  # Equation 1 with block 9 on the 7x7 map
    assert e.gamma == pytest.approx(gamma_paper(0.1, 7, 7, 7)) and e.gamma != pytest.approx(unclipped)
    assert e.expected_drop_rate == pytest.approx(expected_drop_rate(e.gamma, 7, 7, 7))
    for keep, _ in e.draws:
        per_channel = keep[0].reshape(keep.shape[1], -1)
        assert (per_channel.all(dim=1) | ~per_channel.any(dim=1)).all()
    assert 0 < e.stats.drop_rate.mean < 0.3


# --- any model ------------------------------------------------------------------------------------

def test_a_loaded_model_brings_its_preprocessing_names_and_spec(code_dir, chelsea):
    from dropblock.models import load_classifier

    names = [f"kind {i}" for i in range(10)]
    loaded = load_classifier("tinynet:build", input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, class_names=names)
    e = layer_effect(loaded, chelsea, "stem.1", "dropblock", 0.2, block_size=3, samples=2, seed=1)
    x, crop = preprocess(loaded, chelsea)
    assert e.model == "tinynet:build" and e.layer == "stem.1" and e.feature_shape == (8, 16, 16)
    assert np.array_equal(e.crop, crop) and crop.shape == (32, 32, 3)
    assert torch.allclose(x.mean(), torch.from_numpy((crop / 255.0 - 0.5) / 0.25).float().mean(), atol=1e-5)
    with torch.no_grad():
        probs = torch.softmax(loaded.module(x)[0].double(), -1)
    assert_same_predictions(e.predictions_before, top_k(probs, 5, names))
    assert 0 < e.first.drop_rate < 1 and e.first.kl > 0


def assert_same_predictions(got, want):
    """Same classes in the same order, probabilities equal up to the last float bits of a batched pass
    (forward_many's unedited row shares a batch with the edited ones)."""
    assert [(p.index, p.label) for p in got] == [(p.index, p.label) for p in want]
    assert [p.prob for p in got] == pytest.approx([p.prob for p in want], rel=1e-5, abs=1e-7)
