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
    LayerEffect, Prediction, apply_mask, effect_json, kl_divergence, layer_effect, mask_scale, top_k,
)
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
    assert np.array_equal(draw.keep[0].numpy(), e.keep)
    scale = mask_scale(method, draw.keep, p)
    training_scale = {"dropblock": draw.keep.numel() / draw.keep.sum().item(),  # numel / kept
                      "dropout": 1 / (1 - p), "spatial-dropout": 1 / (1 - p), "cutout": 1.0}[method]
    assert e.scale == scale == pytest.approx(training_scale)
    run = forward_many(model, x, LAYER, [lambda f: apply_mask(f, draw.keep, scale)], keep_features=True)
    before, after = run.feature_before[0], run.features_after[0]
    keep = draw.keep[0].expand_as(before)
    assert torch.equal(after[keep], before[keep] * scale)
    assert torch.equal(after[~keep], torch.zeros_like(after[~keep]))
    assert 0 < (~keep).sum() < keep.numel()
    # The effect's arrays are this same edit.
    idx = torch.from_numpy(e.top_channels)
    assert np.array_equal(e.channels_before, before[idx].numpy())
    assert np.array_equal(e.channels_after, after[idx].numpy())
    assert np.allclose(e.act_before, before.mean(0).numpy()) and np.allclose(e.act_after, after.mean(0).numpy())
    assert np.array_equal(e.drop_fraction, (~keep).float().mean(0).numpy())
    assert e.realized_drop_rate == pytest.approx((~keep).float().mean().item())
    assert e.channels_after.shape == (8, h, w) and e.keep.dtype == bool
    # The per-channel masks of the top channels are the real masks of those channels.
    assert e.channel_keep.shape == (8, h, w)
    assert np.array_equal(e.channel_keep, keep[idx].numpy())
    assert len(e.draws) == 1 and torch.equal(e.draws[0][0], draw.keep) and e.draws[0][1] == scale
    probs_after = torch.softmax(run.logits_after[0].double(), -1)
    assert [q.index for q in e.predictions_after] == [q.index for q in top_k(probs_after)]
    assert e.predictions_after[0].prob == pytest.approx(probs_after.max().item(), rel=1e-5)
    assert e.kl_divergence == pytest.approx(kl_divergence(run.logits_before, run.logits_after).item(), rel=1e-4)
    if method in ("dropout", "spatial-dropout"):
        assert e.centres is None and e.gamma is None
    else:
        assert e.centres.ndim == 2 and e.centres.shape[1] == 2
        assert np.array_equal(e.centres, draw.centres.numpy())
        dropped0 = ~draw.keep[0, 0]  # the centres are channel 0's (DropBlock) or the shared holes' (Cutout)
        assert bool(dropped0.any()) == (len(e.centres) > 0)
        assert all(dropped0[int(r), int(col)] for r, col in e.centres)
    assert (e.gamma is not None) == (method == "dropblock")
    # The top channels really are the most active before.
    means = before.mean(dim=(1, 2))
    assert means[idx].min() >= means[[i for i in range(c) if i not in set(e.top_channels.tolist())]].max()


# --- eval mode and p = 0 -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["dropblock", "dropout", "cutout"])
def test_p_zero_changes_nothing(model, coffee, method):
    e = layer_effect(model, coffee, LAYER, method, 0.0)
    assert e.predictions_after == e.predictions_before
    assert e.kl_divergence == 0.0 and e.realized_drop_rate == 0.0 and e.scale == 1.0
    assert e.keep.all() and np.array_equal(e.act_after, e.act_before)
    assert np.array_equal(e.channels_after, e.channels_before)
    assert not model.training
    if method != "dropblock":
        return
    # Several draws go through the rest of the network as one batch, which may move logits in
    # the last float bits; nothing more.
    many = layer_effect(model, coffee, LAYER, method, 0.0, samples=3)
    assert many.kl.mean < 1e-9 and (many.drop_rate.mean, many.drop_rate.se) == (0.0, 0.0)
    assert (many.top1_changed.mean, many.top1_changed.se) == (0.0, 0.0)
    assert [q.index for q in many.predictions_after] == [q.index for q in e.predictions_before]


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
    assert e_train.kl_divergence == pytest.approx(e.kl_divergence, rel=1e-5)


# --- seeds --------------------------------------------------------------------------------------

def test_same_seed_same_result_different_seed_different_mask(model, chelsea):
    calls = []
    kw = dict(samples=4, gamma="exact")
    a = layer_effect(model, chelsea, LAYER, "dropblock", 0.1, seed=7, progress=calls.append, **kw)
    b = layer_effect(model, chelsea, LAYER, "dropblock", 0.1, seed=7, **kw)
    c = layer_effect(model, chelsea, LAYER, "dropblock", 0.1, seed=8, **kw)
    assert calls == [1] * 4
    assert len(a.draws) == 4 and all(torch.equal(da[0], db[0]) for da, db in zip(a.draws, b.draws))
    assert a.drop_rate.mean == pytest.approx(np.mean([float((~k).float().mean()) for k, _ in a.draws]))
    assert np.array_equal(a.keep, b.keep) and np.array_equal(a.centres, b.centres)
    assert np.array_equal(a.act_after, b.act_after)
    assert a.kl == b.kl and a.kl_divergence == b.kl_divergence and a.drop_rate == b.drop_rate
    assert a.predictions_after == b.predictions_after and effect_json(a) == effect_json(b)
    assert not np.array_equal(a.keep, c.keep)
    assert a.kl != c.kl


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
    assert abs(db.drop_rate.mean - do.drop_rate.mean) < 0.01
    combined_se = float(np.hypot(db.kl.se, do.kl.se))
    assert db.kl.mean - do.kl.mean > 3 * combined_se, (db.kl, do.kl)


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
    assert j3["kl_divergence_stats"] == {"mean": many.kl.mean, "se": many.kl.se}
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
    e = layer_effect(model, chelsea, "blocks.12", "dropblock", 0.1, block_size=9)  # 7x7 map
    assert e.feature_shape[1:] == (7, 7) and e.params["block"] == [7, 7]
    assert isinstance(e, LayerEffect)


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
    assert 0 < e.realized_drop_rate < 1 and e.kl_divergence > 0


def assert_same_predictions(got, want):
    """Same classes in the same order, probabilities equal up to the last float bits of a batched pass
    (forward_many's unedited row shares a batch with the edited ones)."""
    assert [(p.index, p.label) for p in got] == [(p.index, p.label) for p in want]
    assert [p.prob for p in got] == pytest.approx([p.prob for p in want], rel=1e-5, abs=1e-7)
