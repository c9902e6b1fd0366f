"""timm:NAME models (integration: .ci/integration runs these in an env with timm).

Random-init models with saved state dicts stand in for pretrained weights, so nothing downloads.
"""

import pytest
import torch

from edits import assert_edits_match_hooks, hooked_logits
from integration import require

timm = require("timm")

import dropblock.models as M  # noqa: E402
from dropblock import add_dropblock  # noqa: E402
from dropblock.models.errors import UnknownModelError, WeightsError  # noqa: E402


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return timm.create_model("resnet18.a1_in1k").eval()


def test_safetensors_weights_config_and_names(r18, tmp_path):
    from safetensors.torch import save_file

    save_file(r18.state_dict(), tmp_path / "model.safetensors")
    loaded = M.load_classifier("timm:resnet18.a1_in1k", weights=tmp_path / "model.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the same maths; kernels may differ in the last bits
        assert torch.allclose(loaded.module(x), r18(x), atol=1e-6, rtol=1e-5)
    cfg = r18.pretrained_cfg
    prep = loaded.preprocessing
    assert prep.crop == cfg["input_size"][1] and prep.resize == int(prep.crop / cfg["crop_pct"])
    assert prep.mean == tuple(cfg["mean"]) and prep.resample.name.lower() == cfg["interpolation"]
    assert loaded.class_names[967] == "espresso"


def test_default_weights_from_the_hugging_face_cache(r18, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match="--download"):
        M.load_classifier("timm:resnet18.a1_in1k")
    repo = tmp_path / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(r18.state_dict(), snapshot / "model.safetensors")
    loaded = M.load_classifier("timm:resnet18.a1_in1k", input_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), r18(x), atol=1e-6, rtol=1e-5)


def test_edits_and_paper_placement(r18, tmp_path):
    torch.save(r18.state_dict(), tmp_path / "r18.pth")
    loaded = M.load_classifier("timm:resnet18", weights=tmp_path / "r18.pth", input_size=64)
    x = torch.randn(1, 3, 64, 64)
    edit = lambda f: f.flip(-1)  # noqa: E731
    run = M.forward_many(loaded, x, "layer2.0.conv1", [edit])
    want = hooked_logits(r18, x, "layer2.0.conv1", edit)
    assert torch.allclose(run.logits_after, want, atol=1e-5, rtol=1e-5)
    blocks = add_dropblock(loaded.module, ["layer[34].*.bn[12]", "layer[34].*.downsample"],
                           p=0.2, block_size=3)
    assert len(blocks) == 12 and isinstance(loaded.module.layer4[1].downsample, type(blocks[0]))
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), r18(x))


def test_structure_and_errors():
    meta = M.load_structure("timm:resnet50")
    rows = {li.name: li for li in meta.layers}
    assert rows["layer3.5.conv2"].shape == (256, 14, 14)
    assert rows["layer4"].shape == (2048, 7, 7)
    with pytest.raises(UnknownModelError) as exc:
        M.load_classifier("timm:resnt18")
    assert exc.value.close[0] == "resnet18"
    with pytest.raises(UnknownModelError, match="tags of resnet18: resnet18.a1_in1k"):
        M.load_classifier("timm:resnet18.nope")


# --- the command line ------------------------------------------------------------------------------

def test_cli_layers_show_and_compare(r18, sample_images, tmp_path):
    import json

    from safetensors.torch import save_file

    from clirun import run

    r = run("layers", "--model", "timm:resnet18", "--filter", "layer2.0.*,layer4", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["layer2.0.conv1"]["shape"] == [128, 28, 28] and rows["layer4"]["shape"] == [512, 7, 7]

    save_file(r18.state_dict(), tmp_path / "r18.safetensors")
    r = run("show", sample_images / "coffee.jpg", "--model", "timm:resnet18.a1_in1k", "--weights",
            tmp_path / "r18.safetensors", "--layer", "layer2.0.conv1", "--input-size", "64", "-o",
            tmp_path / "s.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["model"], data["layer"], data["feature_shape"]) == ("timm:resnet18.a1_in1k", "layer2.0.conv1",
                                                                     [128, 8, 8])
    from dropblock.models import class_names

    top = data["predictions_before"][0]
    assert top["label"] == class_names()[top["index"]]  # timm's ImageNet label names

    torch.save(r18.state_dict(), tmp_path / "r18.pth")
    r = run("compare", sample_images / "chelsea.jpg", "--model", "timm:resnet18", "--weights", tmp_path / "r18.pth",
            "--layer", "layer3", "--input-size", "64", "-o", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert "chelsea.jpg on timm:resnet18 layer3 (256x4x4)" in r.stdout


def test_cli_errors(sample_images, tmp_path):
    from clirun import run

    r = run("show", sample_images / "coffee.jpg", "--model", "timm:resnt18", "--layer", "layer3", "-o",
            tmp_path / "o.png")
    assert r.exit_code == 2 and "close matches: resnet18" in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name,layers", [
    ("cspresnet50", ["stages.0.blocks.2.conv2.bn.act", "stages.2.blocks.4.conv3.bn.act"]),  # split, cat
    ("dla34", ["level3.tree2.tree2.conv2", "level3.tree1.root.bn"]),                  # trees of roots
    ("hrnet_w18_small", ["stage3.0.branches.2.1.aa", "incre_modules.2.0"]),           # many resolutions
    ("ghostnet_100", ["blocks.7.0.shortcut.0", "blocks.6.3.se.conv_reduce"]),
])
def test_edits_inside_many_architectures_equal_a_forward_hook(name, layers):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert_edits_match_hooks(model, x, layers, [lambda f: f * 0.5, lambda f: f.flip(-1)])
