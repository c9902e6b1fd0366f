"""Hostile inputs to the models and their command-line options (issue "Nothing lost, nothing hung, nothing
silently wrong"): NaN or whole-number weights, a model that returns NaN, user code that calls sys.exit,
a std so small that the input overflows. Each gives one line and a non-zero exit, never a NaN in a table."""

import pathlib

import pytest
import torch

from clirun import run
from test_cli_models import SIZE, one_error_line, save_weights


@pytest.fixture
def tiny(code_dir):
    from dropblock.models import load_classifier

    return load_classifier("tinynet:build").module


@pytest.mark.parametrize("spoil, parts", [
    (lambda s: s["fc.bias"].fill_(float("nan")), ["fc.bias holds NaN or inf"]),
    (lambda s: s.__setitem__("fc.weight", s["fc.weight"].round().long()), ["fc.weight is int64 in the file",
                                                                          "float32 in the model"]),
])
def test_weights_with_nan_or_whole_numbers_are_refused(tiny, tmp_path, sample_images, spoil, parts):
    """Breaks without the value check in fit_state_dict: NaN weights gave 'nan%' with exit 0, and int64 weights
    were cast silently."""
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    spoil(state)
    torch.save(state, tmp_path / "w.pth")
    r = run("show", sample_images / "chelsea.jpg", "--layer", "stem", "--model", "tinynet:build", "--weights",
            tmp_path / "w.pth", "--input-size", SIZE, "-o", tmp_path / "out.png")
    one_error_line(r, 1, "do not fit", *parts)
    assert not (tmp_path / "out.png").exists()


def test_a_model_that_returns_nan_is_a_failure(code_dir, tmp_path, sample_images):
    """A model whose logits are NaN for this image: one line, exit 1 (breaks without forward_many's finite
    check: 'tench (nan%)' and 'KL nan nats' with exit 0)."""
    (code_dir / "nanmodel.py").write_text(
        "import torch\nfrom tinynet import Tiny\n\nclass NaN(Tiny):\n    def forward(self, x):\n"
        "        return super().forward(x) * float('nan')\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return NaN()\n")
    r = run("show", sample_images / "chelsea.jpg", "--layer", "stem", "--model", "nanmodel:build",
            "--input-size", SIZE, "-o", tmp_path / "out.png")
    one_error_line(r, 1, "returns NaN or infinite logits")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("where", ["build", "forward"])
def test_user_code_that_calls_sys_exit_is_a_failure(code_dir, tmp_path, sample_images, where):
    """sys.exit(0) in the user's function or in its forward pass: one line, exit 1, never exit 0 without a
    figure (breaks if SystemExit were let through)."""
    (code_dir / "quitter.py").write_text(
        "import sys\nimport torch\nfrom tinynet import Tiny\n\nclass Quits(Tiny):\n    def forward(self, x):\n"
        "        sys.exit(0)\n\ndef build():\n    sys.exit(0)\n\ndef build_forward():\n    return Quits()\n")
    spec = "quitter:build" if where == "build" else "quitter:build_forward"
    r = run("show", sample_images / "chelsea.jpg", "--layer", "stem", "--model", spec, "--input-size", SIZE,
            "-o", tmp_path / "out.png")
    one_error_line(r, 1, "SystemExit")
    assert not (tmp_path / "out.png").exists()


def test_a_std_that_overflows_the_input_is_refused(code_dir, tmp_path, sample_images):
    """--std 1e-300 made every input inf and every number NaN; it is a usage error naming the limit."""
    r = run("show", sample_images / "chelsea.jpg", "--layer", "stem", "--model", "tinynet:build",
            "--input-size", SIZE, "--std", "1e-300,1,1", "-o", tmp_path / "out.png")
    one_error_line(r, 2, "std must be >= 1e-06")


def test_a_strip_image_is_refused_before_it_is_upscaled(tmp_path):
    """A 100000x3 PNG (a few KB) would be upscaled to 256 px on its short side: 8.5 gigapixels. `show --layer`
    refuses it from its header, one line, exit 1 (breaks if the image were decoded and resized first: 9 GB)."""
    from PIL import Image

    Image.new("RGB", (100000, 3)).save(tmp_path / "strip.png")
    r = run("show", tmp_path / "strip.png", "--layer", "blocks.8", "-o", tmp_path / "out.png")
    one_error_line(r, 1, "strip.png")
    assert not (tmp_path / "out.png").exists()


def test_an_input_size_over_the_limit_is_a_usage_error(tmp_path, sample_images):
    """--input-size 100000 on any --layer command or layers: exit 2 naming the limit, before the model loads."""
    for args in (["show", sample_images / "chelsea.jpg", "--layer", "blocks.8", "-o", tmp_path / "o.png"],
                 ["layers"]):
        one_error_line(run(*args, "--input-size", "100000"), 2, "--input-size 100,000 is over the limit of 2,048")


def test_prints_in_user_code_keep_json_valid(code_dir, tmp_path, sample_images):
    """A user's model that prints when built and in every forward pass: stdout is still one JSON object and the
    prints go to stderr (breaks without results_only_on_stdout: the prints corrupted --json)."""
    import json

    (code_dir / "chatty.py").write_text(
        "import torch\nfrom tinynet import Tiny\n\nclass Chatty(Tiny):\n    def forward(self, x):\n"
        "        print('forward', x.shape)\n        return super().forward(x)\n\ndef build():\n"
        "    print('building')\n    torch.manual_seed(0)\n    return Chatty()\n")
    r = run("show", sample_images / "chelsea.jpg", "--layer", "stem", "--model", "chatty:build", "--input-size", SIZE,
            "-o", tmp_path / "out.png", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["layer"] == "stem"
    assert "building" in r.stderr and "forward" in r.stderr
