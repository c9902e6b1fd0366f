"""dropblock.cam: CAMs before and after a regularizer, checked against torchcam used directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchcam.methods import GradCAM, LayerCAM

from conftest import SAMPLES, pretrained_one_thread
from dropblock.cam import CAM_METHODS, CamResult, cam_json, default_cam_layer, layer_cam
from dropblock.effect import layer_effect
from dropblock.models import UnknownNameError, build_model, preprocess

MODEL, LAYER = "efficientnet-lite0", "blocks.8"


@pytest.fixture(scope="module")
def model():
    yield from pretrained_one_thread(MODEL)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    with Image.open(SAMPLES / "chelsea.jpg") as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@pytest.fixture(scope="module")
def effect(model, chelsea):
    return layer_effect(model, chelsea, LAYER, "dropblock", 0.2, samples=3, seed=4)


def _torchcam(model, x, extractor, target: str, class_index: int | None, hook=None) -> np.ndarray:
    """torchcam's own map, used as its README shows; ``hook`` edits the regularized layer."""
    handle = None if hook is None else model.get_submodule("_blocks.8").register_forward_hook(hook)
    try:
        with extractor(model, target) as cam:
            scores = model(x)
            index = int(scores.argmax()) if class_index is None else class_index
            return cam(class_idx=index, scores=scores)[0][0].detach().numpy()
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize("extractor, method, cam_layer, target, class_index", [
    (GradCAM, "gradcam", None, "_head_act", None),  # default layer (the last 4-D one), clean top-1
    (LayerCAM, "layercam", "blocks.12", "_blocks.12", 281),  # another layer and class
])
def test_cam_before_is_torchcams_own_map(model, chelsea, effect, extractor, method, cam_layer, target, class_index):
    got = layer_cam(model, chelsea, LAYER, effect.draws, method=method, cam_layer=cam_layer,
                    class_index=class_index)
    x, _ = preprocess(MODEL, chelsea)
    want = _torchcam(model, x, extractor, target, class_index)
    assert got.layer == (cam_layer or "head") and got.before.shape == want.shape
    np.testing.assert_allclose(got.before, want, atol=1e-6)
    assert got.class_index == (class_index if class_index is not None else 282)  # tiger cat
    assert got.class_label == ("tabby" if class_index == 281 else "tiger cat")


def test_cam_after_is_the_mean_of_torchcam_maps_with_each_mask_applied(model, chelsea, effect):
    got = layer_cam(model, chelsea, LAYER, effect.draws, batch_size=2)  # batches of 2, then 1
    x, _ = preprocess(MODEL, chelsea)
    maps = []
    for keep, scale in effect.draws:
        def hook(module, args, out, keep=keep.clone(), scale=scale):
            return out * keep * scale
        maps.append(_torchcam(model, x, GradCAM, "_head_act", got.class_index, hook))
    np.testing.assert_allclose(got.after, np.mean(maps, axis=0), atol=2e-5)
    assert got.samples == 3 and not np.allclose(got.after, got.before, atol=1e-3)
    assert -1 <= got.correlation < 1 and got.correlation > 0.5


def test_masks_that_drop_nothing_leave_the_cam_as_it_was(model, chelsea):
    clean = layer_effect(model, chelsea, LAYER, "dropout", 0.0, samples=2)
    got = layer_cam(model, chelsea, LAYER, clean.draws, method="gradcampp")
    np.testing.assert_allclose(got.after, got.before, atol=1e-5)
    assert got.peak_after == got.peak_before and got.correlation == pytest.approx(1.0)


def test_the_model_is_left_as_it_was(model, chelsea, effect):
    model.train()
    try:
        layer_cam(model, chelsea, LAYER, effect.draws[:1], method="xgradcam")
        assert all(m.training for m in model.modules())
    finally:
        model.eval()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_default_layer_is_the_last_map_and_the_cam_layer_comes_after_the_layer(model, chelsea, effect):
    assert default_cam_layer(model) == "head"
    resnet = build_model("resnet18")
    assert default_cam_layer(resnet) == "layer4"
    with pytest.raises(ValueError, match="comes before layer"):
        layer_cam(model, chelsea, LAYER, effect.draws, cam_layer="blocks.3")
    with pytest.raises(UnknownNameError):
        layer_cam(model, chelsea, LAYER, effect.draws, cam_layer="blocks.77")
    image = np.zeros((64, 64, 3), np.uint8)
    draws = [(torch.ones(1, 512, 7, 7, dtype=torch.bool), 1.0)]
    for layer, cam_layer in (("layer4", "layer4.1"), ("layer4.1", "layer4")):  # one map, two names
        got = layer_cam(resnet, image, layer, draws, cam_layer=cam_layer)
        assert got.before.shape == (7, 7)


def test_bad_arguments_and_json(model, chelsea, effect):
    with pytest.raises(ValueError, match="method must be one of"):
        layer_cam(model, chelsea, LAYER, effect.draws, method="gradcam++")
    with pytest.raises(ValueError, match="class_index"):
        layer_cam(model, chelsea, LAYER, effect.draws, class_index=1000)
    with pytest.raises(ValueError, match="draws"):
        layer_cam(model, chelsea, LAYER, [])
    assert {"gradcam", "gradcampp", "layercam", "scorecam"} <= set(CAM_METHODS)
    r = CamResult("gradcam", "head", 282, "tiger cat", np.eye(3, dtype=np.float32),
                  np.fliplr(np.eye(3)).astype(np.float32) * 0.5 + np.eye(3, dtype=np.float32), 4)
    assert cam_json(r) == {"method": "gradcam", "layer": "head", "class_index": 282, "class_label": "tiger cat",
                           "samples": 4, "peak_before": [0, 0], "peak_after": [1, 1],
                           "correlation": pytest.approx(np.corrcoef(r.before.ravel(), r.after.ravel())[0, 1])}
    flat = CamResult("gradcam", "head", 0, "x", np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32), 1)
    assert flat.correlation is None
