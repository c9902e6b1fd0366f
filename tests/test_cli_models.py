"""The model options of `layers`, `show --layer` and `compare --layer` (dropblock.cli.models) on the user's
own code: file.py:function and module:function, weights as .pth and .safetensors, and every error as one
line with its exit code. torchvision: and timm: run in the integration tests (.ci/integration)."""

import json
import pathlib

import pytest
import torch

from clirun import run
from usercode import Touch

SIZE = "64"  # --input-size: the tiny model's maps are then 32 x 32 (stem) and 16 x 16 (block)


def one_error_line(r, code: int, *parts: str) -> str:
    """The run failed with ``code`` and one stderr line holding every part."""
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output, r.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def trained(code_dir):
    """tinynet:build's module with weights unlike its own init: class 3 wins by far."""
    from dropblock.models import load_classifier

    model = load_classifier("tinynet:build").module
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
        model.fc.bias[3] = 20.0
    return model


def save_weights(model, path: pathlib.Path) -> pathlib.Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), path)
    else:
        torch.save(model.state_dict(), path)
    return path


def specs(code_dir):
    return {"file": f"{code_dir / 'tinynet.py'}:build", "module": "tinynet:build"}


@pytest.mark.parametrize("form", ["file", "module"])
def test_layers_of_own_code_from_a_forward_pass(code_dir, form):
    spec = specs(code_dir)[form]
    r = run("layers", "--model", spec, "--input-size", SIZE, "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert list(rows) == ["stem", "stem.0", "stem.1", "stem.2", "block", "block.0", "block.1", "pool"]
    assert rows["stem.1"] == {"name": "stem.1", "type": "BatchNorm2d", "shape": [8, 32, 32], "dropblock_ok": True,
                              "calls": 1}
    assert rows["pool"]["shape"] == [16, 1, 1] and not rows["pool"]["dropblock_ok"]
    r = run("layers", "--model", spec, "--filter", "block*", "--filter", "pool")
    assert r.exit_code == 0, r.output
    assert f"{spec}: layers at a 224x224 input, 4 of 8" in r.stdout.replace("\n", "")  # a long title wraps
    assert "block.0" in r.stdout and "stem" not in r.stdout and "16 x 56 x 56" in r.stdout


def test_layers_takes_the_model_options(code_dir, trained, tmp_path):
    """`layers` accepts what show and compare accept (--weights, --mean, --std, --class-names), and loads the
    weights it is given: a file that does not fit fails (breaks with 'No such option', or if --weights were
    parsed but ignored)."""
    weights = save_weights(trained, tmp_path / "trained.pth")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"kind {i}\n" for i in range(10)))
    r = run("layers", "--model", "tinynet:build", "--weights", weights, "--input-size", SIZE, "--mean", "0.5,0.5,0.5",
            "--std", "0.2,0.2,0.2", "--class-names", names, "--json")
    assert r.exit_code == 0, r.output
    assert [row["name"] for row in json.loads(r.stdout)][:2] == ["stem", "stem.0"]
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "other.pth")
    one_error_line(run("layers", "--model", "tinynet:build", "--weights", tmp_path / "other.pth"), 1,
                   "do not fit", "unexpected keys other.weight")
    names.write_text("one\ntwo\n")
    one_error_line(run("layers", "--model", "tinynet:build", "--class-names", names), 2, "2 names", "10 outputs")


@pytest.mark.parametrize("form, suffix", [("file", ".pth"), ("module", ".safetensors")])
def test_show_layer_on_own_code_with_weights(code_dir, trained, sample_images, tmp_path, form, suffix):
    spec = specs(code_dir)[form]
    weights = save_weights(trained, tmp_path / f"trained{suffix}")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"kind {i}\n" for i in range(10)))
    out = tmp_path / "show.png"
    r = run("show", sample_images / "coffee.jpg", "--model", spec, "--weights", weights, "--layer", "block",
            "--input-size", SIZE, "--class-names", names, "-b", "3", "-n", "2", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["model"], data["layer"], data["feature_shape"]) == (spec, "block", [16, 16, 16])
    top = data["predictions_before"][0]
    assert (top["index"], top["label"]) == (3, "kind 3") and top["prob"] > 0.99  # the file's weights, not the init
    assert data["samples"] == 2 and data["params"]["block"] == [3, 3] and out.stat().st_size > 10_000
    r = run("show", sample_images / "coffee.jpg", "--model", spec, "--weights", weights, "--layer", "block",
            "--input-size", SIZE, "-o", out)
    assert r.exit_code == 0, r.output
    assert f"{spec} / block (16x16x16)" in r.stdout and "class 3 (" in r.stdout


@pytest.mark.parametrize("form, suffix", [("file", ".safetensors"), ("module", ".pth")])
def test_compare_layer_on_own_code_with_weights(code_dir, trained, sample_images, tmp_path, form, suffix):
    spec = specs(code_dir)[form]
    weights = save_weights(trained, tmp_path / f"trained{suffix}")
    out = tmp_path / "compare.png"
    args = ("compare", sample_images / "chelsea.jpg", "--model", spec, "--weights", weights, "--layer", "stem.2",
            "--input-size", SIZE, "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "-n", "3", "-o", out)
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["model"], data["layer"], data["feature_shape"]) == (spec, "stem.2", [8, 32, 32])
    assert [m["method"] for m in data["methods"]] == ["dropblock", "dropout", "cutout"]
    assert all(m["samples"] == 3 for m in data["methods"]) and out.stat().st_size > 10_000
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert f"chelsea.jpg on {spec} stem.2 (8x32x32)" in r.stdout


@pytest.mark.parametrize("what", ["hostile object", "whole module"])
def test_pickled_objects_are_refused_and_never_run(code_dir, trained, sample_images, tmp_path, what):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"weights": Touch(marker)} if what == "hostile object" else trained, evil)
    out = tmp_path / "o.png"
    r = run("show", sample_images / "coffee.jpg", "--model", "tinynet:build", "--weights", evil, "--layer", "block",
            "-o", out)
    one_error_line(r, 1, "refused and nothing in it ran", "save a state dict", "torch.save(model.state_dict()")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("model, layer, code, parts", [
    ("vgg16", "stem", 2, ["unknown model 'vgg16'", "efficientnet-lite0, resnet18, resnet50", "torchvision:NAME",
                          "path/to/file.py:function"]),
    ("timm:", "stem", 2, ["names no model", "timm:resnet50"]),
    ("{dir}/nope.py:build", "stem", 2, ["nope.py does not exist"]),
    ("no_such_pkg_xyz:build", "stem", 2, ["no module named 'no_such_pkg_xyz'"]),
    ("tinynet:biuld", "stem", 2, ["unknown function 'biuld'", "close matches: build"]),
    ("tinynet:boom", "stem", 1, ["tinynet:boom() raised RuntimeError: no GPU here"]),
    ("tinynet:not_a_model", "stem", 1, ["returned a int, expected a torch.nn.Module"]),
    ("tinynet:features_only", "0", 1, ["returns shape (1, 8, 112, 112) for one image, expected (1, classes) logits"]),
    ("broken_import:build", "stem", 1, ["ValueError: bad config"]),
    ("tinynet:build", "blok", 2, ["unknown layer 'blok'", "close matches: block"]),
    ("tinynet:build", "fc", 2, ["layer 'fc' of tinynet:build outputs shape (1, 10)", "4-D layers near it:",
                                "block.1, pool"]),
])
def test_model_and_layer_errors(code_dir, sample_images, tmp_path, model, layer, code, parts):
    out = tmp_path / "o.png"
    r = run("show", sample_images / "coffee.jpg", "--model", model.format(dir=tmp_path), "--layer", layer, "-o", out)
    one_error_line(r, code, *parts)
    assert not out.exists()


def test_a_layer_that_runs_twice_names_the_layers_near_it(sample_images, tmp_path):
    from dropblock.models import build_model

    weights = save_weights(build_model("resnet18"), tmp_path / "r18.pth")
    r = run("show", sample_images / "coffee.jpg", "--model", "resnet18", "--weights", weights, "--layer",
            "layer3.0.relu", "-o", tmp_path / "o.png")
    one_error_line(r, 2, "'layer3.0.relu' of resnet18 runs 2 times", "layers near it that run once:", "layer3.0.bn1")


@pytest.mark.parametrize("extra, module", [("torchvision", "torchvision"), ("timm", "timm")])
def test_a_missing_extra_is_named(sample_images, tmp_path, monkeypatch, extra, module):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails as if not installed
    r = run("layers", "--model", f"{extra}:resnet18")
    one_error_line(r, 1, f"pip install 'dropblock[{extra}]'")
    r = run("compare", sample_images / "coffee.jpg", "--model", f"{extra}:resnet18", "--layer", "layer3",
            "-o", tmp_path / "o.png")
    one_error_line(r, 1, f"pip install 'dropblock[{extra}]'")


def test_file_and_option_errors(code_dir, trained, sample_images, tmp_path):
    good = save_weights(trained, tmp_path / "w.pth")
    state = trained.state_dict()
    del state["block.0.weight"]
    unfit = tmp_path / "unfit.pth"
    torch.save(state, unfit)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    cases = [
        (["--weights", tmp_path / "missing.pth"], 2, ["--weights", "no such file"]),
        (["--weights", corrupt], 1, ["cannot read weights file", "corrupt"]),
        (["--weights", unfit], 1, ["do not fit tinynet:build: missing keys block.0.weight"]),
        (["--weights", good, "--class-names", tmp_path / "none.txt"], 2, ["--class-names", "no such file"]),
        (["--weights", good, "--class-names", short], 2, ["has 2 names but tinynet:build has 10 outputs"]),
        (["--mean", "0.5,0.5"], 2, ["--mean must be three numbers"]),
        (["--std", "0.2,0,0.2"], 2, ["--std must be three numbers > 0"]),
        (["--input-size", "0"], 2, ["--input-size must be >= 1"]),
    ]
    for extra, code, parts in cases:
        out = tmp_path / "o.png"
        r = run("show", sample_images / "coffee.jpg", "--model", "tinynet:build", "--layer", "block", "-o", out,
                *extra)
        one_error_line(r, code, *parts)
        assert not out.exists()


def test_model_options_need_a_layer(sample_images, tmp_path):
    r = run("show", sample_images / "coffee.jpg", "--weights", "w.pth", "--input-size", "64", "-o", tmp_path / "o.png")
    one_error_line(r, 2, "--weights, --input-size need --layer")
    r = run("compare", sample_images / "coffee.jpg", "--model", "resnet18", "-o", tmp_path / "o.png")
    one_error_line(r, 2, "--model needs --layer")
    r = run("layers", "--filter", "nothing*")
    one_error_line(r, 2, "--filter nothing*: none of the 133 layers of efficientnet-lite0 matches")


def test_cam_and_sweep_take_own_code_too(code_dir, trained, sample_images, tmp_path):
    weights = save_weights(trained, tmp_path / "w.pth")
    model = ("--model", "tinynet:build", "--weights", weights, "--input-size", SIZE)
    r = run("show", sample_images / "coffee.jpg", *model, "--layer", "stem", "--cam", "gradcam", "-o",
            tmp_path / "cam.png", "--json")
    assert r.exit_code == 0, r.output
    cam = json.loads(r.stdout)["cam"]
    assert (cam["layer"], cam["class_index"], cam["class_label"]) == ("block", 3, "class 3")  # the last 4-D map
    r = run("sweep", sample_images / "coffee.jpg", sample_images / "chelsea.jpg", *model, "--layer", "block",
            "--keep-probs", "1,0.8", "--block-sizes", "3", "--methods", "dropblock", "-n", "2", "-o",
            tmp_path / "sweep.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert (data["model"], data["layers"], data["images"]) == ("tinynet:build", ["block"], 2)
    assert [(x["keep_prob"], x["masks"]) for x in data["results"]] == [(1.0, 4), (0.8, 4)]
    r = run("sweep", sample_images / "coffee.jpg", *model, "--layer", "fc", "-o", tmp_path / "s.png")
    one_error_line(r, 2, "layer 'fc' of tinynet:build outputs shape")
