"""torchvision:NAME models (integration: .ci/integration runs these in an env with torchvision).

Random-init models with saved state dicts stand in for pretrained weights, so nothing downloads.
"""

import pytest
import torch

from edits import assert_edits_match_hooks, hooked_logits
from integration import require
from usercode import Touch

torchvision = require("torchvision")

import dropblock.models as M  # noqa: E402
from dropblock import add_dropblock  # noqa: E402
from dropblock.models.errors import UnknownModelError, WeightsError  # noqa: E402


def save(model, path):
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small().eval()


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_weights_file_preprocessing_and_class_names(mobilenet, tmp_path):
    loaded = M.load_classifier("torchvision:mobilenet_v3_small",
                               weights=save(mobilenet, tmp_path / "m.pth"))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), mobilenet(x))
    t = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.transforms()
    prep = loaded.preprocessing
    assert (prep.resize, prep.crop, prep.mean, prep.std) == (t.resize_size[0], t.crop_size[0],
                                                             tuple(t.mean), tuple(t.std))
    assert loaded.class_names[:2] == ("tench", "goldfish") and loaded.num_classes == 1000


def test_safetensors_and_editing_inside_a_residual_block(r18, tmp_path):
    from safetensors.torch import save_file

    save_file(r18.state_dict(), tmp_path / "r18.safetensors")
    loaded = M.load_classifier("torchvision:resnet18", weights=tmp_path / "r18.safetensors",
                               input_size=64)
    x = torch.randn(1, 3, 64, 64)
    edit = lambda f: f * (torch.arange(f.shape[-1]) % 2).to(f.dtype)  # noqa: E731
    run = M.forward_many(loaded, x, "layer3.0.conv2", [edit, lambda f: f])
    want = hooked_logits(r18, x, "layer3.0.conv2", edit)
    assert torch.allclose(run.logits_after[0], want[0], atol=1e-5, rtol=1e-5)
    assert torch.allclose(run.logits_after[1], run.logits_before[0], atol=1e-5, rtol=1e-5)
    assert loaded.layer("layer3.0.conv2").shape == (256, 4, 4)


def test_paper_placement_with_identity_shortcuts(r18):
    model = torchvision.models.resnet18()
    model.load_state_dict(r18.state_dict())
    blocks = add_dropblock(model, ["layer[34].*.bn[12]", "layer[34].*.downsample"], p=0.2,
                           block_size=3)
    assert len(blocks) == 4 * 3 and isinstance(model.layer3[1].downsample, type(blocks[0]))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), r18(x))
        assert not torch.allclose(model.train()(x), r18(x))


def test_fine_tuned_head_gets_its_own_classes(tmp_path):
    torch.manual_seed(0)
    tuned = torchvision.models.resnet18(num_classes=10).eval()
    loaded = M.load_classifier("torchvision:resnet18", weights=save(tuned, tmp_path / "t.pth"))
    assert loaded.num_classes == 10 and loaded.class_names[9] == "class 9"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), tuned(x))


def test_default_weights_come_only_from_the_hub_cache(mobilenet, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    cached = tmp_path / "checkpoints" / weights.url.rsplit("/", 1)[1]
    with pytest.raises(WeightsError) as exc:
        M.load_classifier("torchvision:mobilenet_v3_small")
    assert "--download" in str(exc.value) and cached.name in str(exc.value)
    cached.parent.mkdir()
    marker = tmp_path / "ran"
    torch.save({"payload": Touch(marker)}, cached)  # a hostile file in the cache
    with pytest.raises(WeightsError, match="nothing in it ran"):
        M.load_classifier("torchvision:mobilenet_v3_small")
    assert not marker.exists()
    save(mobilenet, cached)
    loaded = M.load_classifier("torchvision:mobilenet_v3_small")
    assert loaded.weights == "default"
    assert all(torch.equal(a, b) for a, b in zip(loaded.module.state_dict().values(),
                                                 mobilenet.state_dict().values()))


def test_download_only_when_asked(mobilenet, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    calls = []

    def fetch(url, **kwargs):
        calls.append((url, kwargs["weights_only"]))
        return mobilenet.state_dict()

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fetch)
    with pytest.raises(WeightsError):
        M.load_classifier("torchvision:mobilenet_v3_small")
    assert calls == []
    M.load_classifier("torchvision:mobilenet_v3_small", download=True)
    assert calls == [(torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url, True)]


def test_structure_on_meta_matches_the_cpu():
    meta = M.load_structure("torchvision:resnet18")
    assert next(meta.module.parameters()).is_meta
    cpu = M.load_classifier("torchvision:resnet18", pretrained=False)
    assert meta.layers == cpu.layers
    rows = {li.name: li for li in meta.layers}
    assert rows["layer3.1.conv2"].shape == (256, 14, 14) and rows["layer1.0.relu"].calls == 2


def test_unknown_name_close_matches_first():
    with pytest.raises(UnknownModelError) as exc:
        M.load_classifier("torchvision:resnt18")
    assert exc.value.close[0] == "resnet18" and "\n" not in str(exc.value)


# --- the command line ------------------------------------------------------------------------------

def input_sensitive(model):
    """A copy whose logits depend strongly on the input, so a preprocessing slip shows: at random init
    the activations of mobilenet_v3_small vanish (std 1e-8). BatchNorm statistics from one batch, and
    a last layer 1000x larger, give logits of std ~5."""
    import copy

    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average: one batch sets the statistics
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 4 - 2)
        model.classifier[3].weight.mul_(1000)
    return model.eval()


def test_cli_layers_show_and_compare(mobilenet, r18, sample_images, tmp_path):
    import json

    from PIL import Image
    from safetensors.torch import save_file

    from clirun import run

    r = run("layers", "--model", "torchvision:resnet18", "--filter", "layer3.0.*", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["layer3.0.conv2"]["shape"] == [256, 14, 14] and rows["layer3.0.downsample"]["dropblock_ok"]
    assert rows["layer3.0.relu"]["calls"] == 2 and not rows["layer3.0.relu"]["dropblock_ok"]

    sharp = input_sensitive(mobilenet)
    weights = save(sharp, tmp_path / "m.pth")
    r = run("show", sample_images / "coffee.jpg", "--model", "torchvision:mobilenet_v3_small", "--weights", weights,
            "--layer", "features.6", "-o", tmp_path / "s.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["model"], data["layer"], data["feature_shape"]) == ("torchvision:mobilenet_v3_small", "features.6",
                                                                     [40, 14, 14])
    # The same input as torchvision's own transforms, the same model, the weights' class names.
    meta = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    with Image.open(sample_images / "coffee.jpg") as im, torch.no_grad():
        probs = torch.softmax(sharp(meta.transforms()(im.convert("RGB"))[None]).double(), -1)[0]
    assert probs.max() > 0.05
    got = data["predictions_before"]
    assert [q["index"] for q in got] == probs.topk(5).indices.tolist()
    assert [q["prob"] for q in got] == pytest.approx(probs.topk(5).values.tolist(), rel=1e-3)
    assert [q["label"] for q in got] == [meta.meta["categories"][q["index"]] for q in got]

    save_file(r18.state_dict(), tmp_path / "r18.safetensors")
    r = run("compare", sample_images / "chelsea.jpg", "--model", "torchvision:resnet18", "--weights",
            tmp_path / "r18.safetensors", "--layer", "layer3.1.conv2", "--input-size", "64", "-n", "2",
            "-o", tmp_path / "c.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["model"], data["layer"], data["feature_shape"]) == ("torchvision:resnet18", "layer3.1.conv2",
                                                                     [256, 4, 4])
    assert len(data["methods"]) == 3 and (tmp_path / "c.png").stat().st_size > 10_000


def test_cli_errors(sample_images, tmp_path, monkeypatch):
    from clirun import run

    r = run("layers", "--model", "torchvision:resnt18")
    assert r.exit_code == 2 and "close matches: resnet18" in r.stderr and len(r.stderr.splitlines()) == 1
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    r = run("show", sample_images / "coffee.jpg", "--model", "torchvision:mobilenet_v3_small", "--layer",
            "features.6", "-o", tmp_path / "o.png")
    assert r.exit_code == 1 and "pass --download" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name,layers", [
    ("densenet121", ["features.denseblock2.denselayer11.norm2", "features.denseblock3.denselayer19.relu1",
                     "features.transition1"]),       # torch.cat of every earlier map
    ("shufflenet_v2_x0_5", ["stage3.5.branch2.2", "stage4.0.branch1", "stage4.1"]),  # chunk, shuffle
    ("googlenet", ["inception4b.branch4.1.conv", "inception5b.branch3.0.bn"]),        # parallel branches
    ("efficientnet_b0", ["features.2.0.block.2.scale_activation", "features.4.2.block.3.0"]),  # SE gates
    ("swin_t", ["features.3.0.norm2", "features.5.5.norm1"]),  # channels-last maps, attention
])
def test_edits_inside_many_architectures_equal_a_forward_hook(name, layers):
    """Whatever stands in for the prefix (saved maps, placeholders, or both passes), each edit
    gives what a forward hook on the layer gives."""
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert_edits_match_hooks(model, x, layers, [lambda f: f * 0.5, lambda f: f.flip(-1)])


def test_a_vit_built_without_its_default_weights_takes_its_own_input_size():
    """ViT-H/14's default weights crop 518 and build a 518 model, but a random-init or weights-file
    model is built for 224: `dropblock layers --model torchvision:vit_h_14` once failed with "Wrong
    image height! Expected 224 but got 518". Breaks without the image_size check of hubs.torchvision_preprocessing."""
    loaded = M.load_structure("torchvision:vit_h_14")
    assert loaded.input_size == 224 and loaded.preprocessing.resize == 224
    assert loaded.layer("conv_proj").shape == (1280, 16, 16)
    assert M.load_structure("torchvision:vit_b_16").preprocessing.resize == 256  # its own weights' transforms
