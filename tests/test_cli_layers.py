"""`dropblock layers` and `show/compare --layer` through typer's test runner (offline, default model)."""

import json

import pytest
import torch

from clirun import run
from dropblock.models import build_model

def test_layers_json_matches_a_real_forward_pass():
    r = run("layers", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {"name", "type", "shape", "dropblock_ok"} <= set(rows[0])
    net = build_model("efficientnet-lite0")
    from dropblock.models import forward_many

    x = torch.zeros(1, 3, 224, 224)
    for row in rows[::4]:
        run_ = forward_many(net, x, row["name"], [lambda f: f])
        assert list(run_.feature_before.shape[1:]) == row["shape"]
    assert [r_["shape"] for r_ in rows if r_["name"] == "blocks.8"] == [[112, 14, 14]]


def test_layers_table_for_resnet50():
    r = run("layers", "--model", "resnet50")
    assert r.exit_code == 0 and "layer3" in r.stdout and "1024 x 14 x 14" in r.stdout


def test_show_layer_json(sample_images, tmp_path):
    out = tmp_path / "f.png"
    r = run("show", sample_images / "coffee.jpg", "--layer", "blocks.8", "-o", out, "--seed", "2", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    for key in ("method", "drop_rate_target", "gamma", "expected_drop_rate", "realized_drop_rate", "output", "seed",
                "model", "layer", "feature_shape", "predictions_before", "predictions_after", "kl_divergence"):
        assert key in data, key
    assert data["model"] == "efficientnet-lite0" and data["layer"] == "blocks.8"
    assert data["feature_shape"] == [112, 14, 14]
    assert data["predictions_before"][0]["index"] == 967 and data["predictions_before"][0]["label"] == "espresso"
    assert len(data["predictions_after"]) == 5 and data["kl_divergence"] >= 0
    assert out.stat().st_size > 50000


def test_compare_layer_with_samples_table_and_json(sample_images, tmp_path):
    out = tmp_path / "c.png"
    r = run("compare", sample_images / "chelsea.jpg", "--layer", "blocks.8", "-n", "4", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [m["method"] for m in data["methods"]] == ["dropblock", "dropout", "cutout"]
    assert all(m["samples"] == 4 and "kl_divergence_stats" in m for m in data["methods"])
    r = run("compare", sample_images / "chelsea.jpg", "--layer", "blocks.8", "-n", "2", "-o", out)
    assert r.exit_code == 0 and "KL" in r.stdout and "Cutout" in r.stdout


def test_block_larger_than_the_feature_map_is_clipped_with_a_warning(sample_images, tmp_path):
    r = run("show", sample_images / "coffee.jpg", "--layer", "blocks.12", "-b", "9", "-o", tmp_path / "x.png", "--json")
    assert r.exit_code == 0, r.output
    assert "clipped to 7x7" in r.stderr
    assert json.loads(r.stdout)["params"]["block"] == [7, 7]


@pytest.mark.parametrize("args, code, text", [
    (["--layer", "blocks.55"], 2, "close matches: blocks.5"),
    (["--layer", "blocks.5", "--model", "vgg16"], 2, "unknown model 'vgg16'"),
    (["--layer", "layer3", "--model", "resnet50", "--weights", "nope.pth"], 2, "no such file"),
])
def test_unknown_names_and_missing_weights(sample_images, tmp_path, args, code, text):
    r = run("show", sample_images / "coffee.jpg", "-o", tmp_path / "o.png", *args)
    assert r.exit_code == code, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and text in r.stderr


def test_resnet_without_weights_says_how_to_get_them(sample_images, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    r = run("show", sample_images / "coffee.jpg", "--layer", "layer3", "--model", "resnet18", "-o", tmp_path / "o.png")
    assert r.exit_code == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "--weights" in r.stderr and "--download" in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_resnet_weights_file_in_torchvision_layout_is_used(sample_images, tmp_path):
    path = tmp_path / "resnet18-custom.pth"
    torch.manual_seed(0)
    torch.save(build_model("resnet18").state_dict(), path)
    r = run("show", sample_images / "coffee.jpg", "--model", "resnet18", "--layer", "layer3", "--weights", path,
            "-o", tmp_path / "r.png", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["feature_shape"] == [256, 14, 14]
    bad = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "fc.weight"}
    torch.save(bad, path)
    r = run("show", sample_images / "coffee.jpg", "--model", "resnet18", "--layer", "layer3", "--weights", path,
            "-o", tmp_path / "r2.png")
    assert r.exit_code == 1 and "fc.weight" in r.stderr


def test_show_layer_with_cam_json_and_table(sample_images, tmp_path):
    out = tmp_path / "cam.png"
    r = run("show", sample_images / "coffee.jpg", "--layer", "blocks.8", "--cam", "gradcam", "-n", "2", "-o", out,
            "--json")
    assert r.exit_code == 0, r.output
    cam = json.loads(r.stdout)["cam"]
    assert {"method", "layer", "class_index", "peak_before", "peak_after", "correlation"} <= set(cam)
    assert (cam["method"], cam["layer"], cam["class_index"], cam["samples"]) == ("gradcam", "head", 967, 2)
    assert all(0 <= v < 7 for v in cam["peak_before"] + cam["peak_after"]) and -1 <= cam["correlation"] <= 1
    r = run("show", sample_images / "coffee.jpg", "--layer", "blocks.8", "--cam", "layercam", "--cam-layer",
            "blocks.12", "--class", "cup", "-o", out)
    assert r.exit_code == 0, r.output
    assert "layercam at blocks.12 (cup)" in r.stdout and "peak" in r.stdout


def test_compare_layer_with_cam_gives_each_method_its_cam(sample_images, tmp_path):
    r = run("compare", sample_images / "chelsea.jpg", "--layer", "blocks.8", "--cam", "gradcam", "--class", "281",
            "-o", tmp_path / "c.png", "--json")
    assert r.exit_code == 0, r.output
    cams = [m["cam"] for m in json.loads(r.stdout)["methods"]]
    assert [c["class_label"] for c in cams] == ["tabby"] * 3
    assert len({tuple(c["peak_before"]) for c in cams}) == 1  # one clean network


def test_spatial_dropout_on_a_layer(sample_images, tmp_path):
    r = run("show", sample_images / "coffee.jpg", "--layer", "blocks.8", "-m", "spatial-dropout", "-o",
            tmp_path / "s.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["method"] == "spatial-dropout" and data["expected_drop_rate"] == pytest.approx(0.1)


@pytest.mark.parametrize("args, text", [
    (["--cam", "gradcam"], "--cam needs --layer"),
    (["--layer", "blocks.8", "--cam-layer", "head"], "need --cam"),
    (["--layer", "blocks.8", "--cam", "grad-cam"], "--cam must be one of"),
    (["--layer", "blocks.8", "--cam", "gradcam", "--cam-layer", "blocks.2"], "comes before layer"),
    (["--layer", "blocks.8", "--cam", "gradcam", "--cam-layer", "blocks.99"], "close matches"),
    (["--layer", "blocks.8", "--cam", "gradcam", "--class", "crane"], "several classes"),
    (["-m", "spatial-dropout"], "spatial-dropout needs --layer"),
])
def test_cam_usage_errors(sample_images, tmp_path, args, text):
    r = run("show", sample_images / "coffee.jpg", "-o", tmp_path / "o.png", *args)
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and text in r.stderr, r.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("model", ["efficientnet-lite0", "resnet18", "resnet50"])
def test_builtin_tables_keep_their_short_names(model):
    from dropblock.models import layer_table

    r = run("layers", "--model", model, "--json")
    assert r.exit_code == 0, r.output
    want = [{"name": li.name, "type": li.type, "shape": list(li.shape), "dropblock_ok": li.dropblock_ok, "calls": 1}
            for li in layer_table(model)]
    assert json.loads(r.stdout) == want


def test_builtin_filter_searches_every_module_in_call_order():
    r = run("layers", "--model", "resnet50", "--filter", "layer3.1*", "--input-size", "160", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows[:3]] == ["layer3.1", "layer3.1.conv1", "layer3.1.bn1"]
    conv2 = next(row for row in rows if row["name"] == "layer3.1.conv2")
    assert conv2["shape"] == [256, 10, 10] and conv2["dropblock_ok"]
    relu = next(row for row in rows if row["name"] == "layer3.1.relu")
    assert relu["calls"] == 3 and not relu["dropblock_ok"]


def test_show_on_a_convolution_inside_a_builtin_residual_block(sample_images, tmp_path):
    path = tmp_path / "r18.pth"
    torch.manual_seed(0)
    torch.save(build_model("resnet18").state_dict(), path)
    r = run("show", sample_images / "coffee.jpg", "--model", "resnet18", "--weights", path, "--layer",
            "layer3.1.conv2", "-b", "3", "-o", tmp_path / "r.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["model"], data["layer"], data["feature_shape"]) == ("resnet18", "layer3.1.conv2", [256, 14, 14])
