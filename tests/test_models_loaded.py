"""dropblock.models.loaded: load_classifier / load_structure on the built-ins, overrides, class names, extras."""

import sys

import numpy as np
import pytest
import torch

import dropblock.models as M
from dropblock.models.errors import ModelLoadError, ModelSpecError


@pytest.fixture(scope="module")
def lite():
    return M.load_classifier("EfficientNet-Lite0")


def test_builtin_bundle(lite):
    assert lite.spec == "efficientnet-lite0" and lite.weights == "default"
    assert lite.preprocessing == M.preprocessing.PREPROCESSING["efficientnet-lite0"]
    assert lite.class_names[967] == "espresso" and lite.num_classes == 1000
    assert isinstance(lite.module, M.EfficientNetLite0) and not lite.module.training
    assert lite.layer("blocks.5").shape == (80, 14, 14)  # a short name
    assert lite.layer("_blocks.5._depthwise_conv").shape == (240, 14, 14)  # any module (40 x 6)


def test_random_init_and_meta_structure_match():
    cpu = M.load_classifier("resnet18", pretrained=False)
    assert cpu.weights == "random init"
    meta = M.load_structure("resnet18")
    assert next(meta.module.parameters()).is_meta
    assert meta.layers == cpu.layers
    rows = {li.name: li for li in meta.layers}
    assert rows["layer3.1.conv2"].shape == (256, 14, 14) and rows["layer1.0.relu"].calls == 2
    assert M.layer_table(meta, filter="layer3.*.conv?") == [
        rows[n] for n in ("layer3.0.conv1", "layer3.0.conv2", "layer3.1.conv1", "layer3.1.conv2")]


def test_overrides_and_class_names_file(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing {i}\n" for i in range(1000)) + "\n\n")
    loaded = M.load_classifier("resnet18", pretrained=False, input_size=160, mean=(0.5, 0.5, 0.5),
                               std=[0.25] * 3, class_names=names)
    prep = loaded.preprocessing
    assert (prep.crop, prep.resize, prep.mean, prep.std) == (160, 182, (0.5,) * 3, (0.25,) * 3)
    assert loaded.class_names[999] == "thing 999"
    assert dict((li.name, li.shape) for li in loaded.layers)["layer4"] == (512, 5, 5)
    x, crop = M.preprocess(loaded, np.full((50, 80, 3), 255, np.uint8))
    assert x.shape == (1, 3, 160, 160) and crop.shape == (160, 160, 3)
    assert torch.allclose(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25
    lite = M.load_classifier("efficientnet-lite0", pretrained=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert lite.preprocessing.mean == (127.5,) * 3  # in its own 0..255 units


def test_bad_arguments(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("cat\ndog\n")
    with pytest.raises(ModelSpecError, match="has 2 names but resnet18 has 1000 outputs"):
        M.load_classifier("resnet18", pretrained=False, class_names=short)
    with pytest.raises(ModelSpecError, match="cannot read class names file"):
        M.load_classifier("resnet18", pretrained=False, class_names=tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="input_size must be"):
        M.load_classifier("resnet18", pretrained=False, input_size=0)
    with pytest.raises(ValueError, match="std must be >= 1e-06"):
        M.load_classifier("resnet18", pretrained=False, std=(1, 0, 1))
    with pytest.raises(ValueError, match="pretrained=False"):
        M.load_classifier("resnet18", device="meta")
    with pytest.raises(ValueError, match="given with pretrained=False"):
        M.load_classifier("resnet18", weights="w.pth", pretrained=False)


@pytest.mark.parametrize("spec,extra", [("torchvision:resnet50", "dropblock[torchvision]"),
                                        ("timm:resnet50", "dropblock[timm]")])
def test_missing_extra_names_it(spec, extra, monkeypatch):
    for name in ("torchvision", "torchvision.models", "timm"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ModelLoadError) as exc:
        M.load_classifier(spec)
    assert f"pip install '{extra}'" in str(exc.value) and "\n" not in str(exc.value)


def test_class_count_must_match_the_output():
    loaded = M.LoadedModel(M.build_model("resnet18"), "resnet18",
                           M.preprocessing.PREPROCESSING["resnet18"], ("a", "b"), "random init")
    with pytest.raises(ModelLoadError, match="returns 1000 logits but has 2 class names"):
        loaded.layers
