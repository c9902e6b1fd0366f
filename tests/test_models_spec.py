"""dropblock.models.names: the model spec forms and their one-line errors (no torch needed)."""

import subprocess
import sys

import pytest

from dropblock.models.errors import ModelSpecError, UnknownModelError, UnknownNameError
from dropblock.models.names import FORMS, ModelSpec, parse_spec


@pytest.mark.parametrize("text,kind,name,function", [
    ("resnet50", "builtin", "resnet50", ""),
    (" EfficientNet_Lite0 ", "builtin", "efficientnet-lite0", ""),
    ("torchvision:resnet50", "torchvision", "resnet50", ""),
    ("TorchVision: convnext_tiny", "torchvision", "convnext_tiny", ""),
    ("timm:resnet50.a1_in1k", "timm", "resnet50.a1_in1k", ""),
    ("my_pkg.models:build", "module", "my_pkg.models", "build"),
    ("models:Factory.build", "module", "models", "Factory.build"),
    ("path/to/model.py:build", "file", "path/to/model.py", "build"),
    ("model.py:build", "file", "model.py", "build"),
    ("/abs/dir.v2/model.py:make_net", "file", "/abs/dir.v2/model.py", "make_net"),
])
def test_forms(text, kind, name, function):
    spec = parse_spec(text)
    assert spec == ModelSpec(kind, name, function)
    assert parse_spec(str(spec)) == spec  # str() gives a spec that parses back to the same


def test_unknown_bare_name_lists_forms_and_close_matches():
    with pytest.raises(UnknownModelError) as exc:
        parse_spec("resnet5")
    err = exc.value
    assert isinstance(err, UnknownNameError) and isinstance(err, ModelSpecError)
    assert isinstance(err, ValueError)  # a usage error
    assert err.choices[0] == "resnet50"
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith("unknown model 'resnet5'; close matches: resnet50")
    for part in ("efficientnet-lite0", "torchvision:NAME", "timm:NAME", "module.path:function",
                 "path/to/file.py:function"):
        assert part in msg


@pytest.mark.parametrize("text,part", [
    ("", "empty model name"),
    ("torchvision:", "torchvision:NAME"),
    ("timm: ", "timm:NAME"),
    ("model.py", "model.py:function"),
    ("dir/model.pth:build", "is not a .py file"),
    ("my-pkg:build", "is not a module path"),
    ("pkg.mod:", "is not a function name"),
    ("pkg.mod:build()", "is not a function name"),
    ("hf-hub:timm/resnet50", "is not a module path"),
])
def test_malformed_specs(text, part):
    with pytest.raises(ModelSpecError) as exc:
        parse_spec(text)
    msg = str(exc.value)
    assert part in msg and "\n" not in msg


def test_forms_text_names_every_builtin():
    assert "efficientnet-lite0, resnet18, resnet50" in FORMS


def test_parsing_imports_no_torch():
    code = ("import sys; from dropblock.models import parse_spec; "
            "parse_spec('timm:resnet50'); parse_spec('a.b:c'); "
            "assert 'torch' not in sys.modules and 'timm' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
