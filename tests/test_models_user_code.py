"""dropblock.models.sources on the user's own code, through load_classifier: module:function and file.py:function."""

import pytest
import torch

import dropblock.models as M
from dropblock.models.errors import ModelLoadError, ModelSpecError, UnknownNameError, WeightsError

def one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_file_and_module_forms_load_the_same_model(code_dir):
    by_file = M.load_classifier(f"{code_dir / 'tinynet.py'}:build")
    by_module = M.load_classifier("tinynet:build")
    assert by_module.spec == "tinynet:build" and by_file.spec.endswith("tinynet.py:build")
    assert by_file.weights == "own code" and not by_file.module.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(by_file.module(x), by_module.module(x))
    assert by_file.num_classes == 10 and by_file.class_names[:2] == ("class 0", "class 1")
    assert by_file.preprocessing == M.Preprocessing(256, 224, by_file.preprocessing.resample, 255.0,
                                                    (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert M.load_classifier("tinynet:build_1000").class_names[967] == "espresso"


def test_file_model_layers_come_from_its_forward_pass(code_dir):
    model = M.load_classifier(f"{code_dir / 'tinynet.py'}:build")
    rows = {li.name: li for li in model.layers}
    assert list(rows) == ["stem", "stem.0", "stem.1", "stem.2", "block", "block.0", "block.1", "pool"]
    assert rows["stem.1"].shape == (8, 112, 112) and rows["block"].shape == (16, 56, 56)
    assert rows["pool"].shape == (16, 1, 1) and not rows["pool"].dropblock_ok
    assert rows["stem.0"].type == "Conv2d" and rows["stem"].type == "Sequential"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_files_for_own_code(code_dir, tmp_path, suffix):
    from safetensors.torch import save_file

    trained = M.load_classifier("tinynet:build").module
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)  # unlike the function's own init
    path = tmp_path / f"trained{suffix}"
    if suffix == ".pth":
        torch.save(trained.state_dict(), path)
    else:
        save_file(trained.state_dict(), path)
    loaded = M.load_classifier("tinynet:build", weights=path)
    assert loaded.weights == str(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), trained.eval()(x))


def test_weights_that_do_not_fit_name_the_keys(code_dir, tmp_path):
    state = M.load_classifier("tinynet:build").module.state_dict()
    del state["block.0.weight"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError) as exc:
        M.load_classifier("tinynet:build", weights=tmp_path / "w.pth")
    assert "do not fit tinynet:build: missing keys block.0.weight" in one_line(exc)


@pytest.mark.parametrize("spec,error,part", [
    ("tinynet:buidl", UnknownNameError, "unknown function 'buidl' for module tinynet; close matches: build"),
    ("tinynet:boom", ModelLoadError, "tinynet:boom() raised RuntimeError: no GPU here"),
    ("tinynet:not_a_model", ModelLoadError, "tinynet:not_a_model() returned a int, expected a torch.nn.Module"),
    ("tinynet:width", ModelSpecError, "width in module tinynet is a int, not a function"),
    ("no_such_pkg.models:build", ModelSpecError, "no module named 'no_such_pkg'"),
    ("broken_import:build", ModelLoadError, "importing broken_import for model 'broken_import:build' failed: ValueError: bad config"),
    ("tinynet:features_only", ModelLoadError, "tinynet:features_only returns shape (1, 8, 112, 112) for one image, expected (1, classes) logits"),
])
def test_errors_are_one_line(code_dir, spec, error, part):
    with pytest.raises(error) as exc:
        M.load_classifier(spec)
    assert part in one_line(exc)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(ModelSpecError, match="does not exist"):
        M.load_classifier(f"{tmp_path / 'nope.py'}:build")
    (tmp_path / "dir.py").mkdir()
    with pytest.raises(ModelSpecError, match="is not a file"):
        M.load_classifier(f"{tmp_path / 'dir.py'}:build")


def test_file_error_does_not_leave_sys_path_changed(tmp_path):
    import sys

    bad = tmp_path / "bad.py"
    bad.write_text("raise ImportError('missing dep')\n")
    before = list(sys.path)
    with pytest.raises(ModelLoadError, match="ImportError: missing dep"):
        M.load_classifier(f"{bad}:build")
    assert sys.path == before
