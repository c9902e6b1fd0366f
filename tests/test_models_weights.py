"""dropblock.models.weights: .safetensors files, refusing pickled objects, fitting to other class counts."""

import sys

import pytest
import torch
from torch import nn
from usercode import Touch

from dropblock.models.errors import WeightsError
from dropblock.models.weights import build_and_fit, output_rows, read_state_dict


def small(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, classes))


def test_safetensors_round_trip_whatever_the_suffix(tmp_path):
    from safetensors.torch import save_file

    state = small().state_dict()
    for name in ("w.safetensors", "w.pth"):
        save_file(state, tmp_path / name)
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_corrupt_safetensors_and_missing_package(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(small().state_dict(), path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(WeightsError, match="corrupt .safetensors") as exc:
        read_state_dict(path)
    assert "\n" not in str(exc.value)
    save_file(small().state_dict(), path)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # as if not installed
    with pytest.raises(WeightsError, match="needs the safetensors package: pip install safetensors"):
        read_state_dict(path)


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "whole.pth"
    torch.save(small(), path)
    with pytest.raises(WeightsError) as exc:
        read_state_dict(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "torch.nn.modules.container.Sequential" in msg and "save a state dict instead" in msg


def test_pickle_that_would_create_a_file_runs_nothing(tmp_path):
    marker = tmp_path / "created-by-unpickling"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": Touch(marker)}, path)
    with pytest.raises(WeightsError, match="nothing in it ran"):
        read_state_dict(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # what an unsafe loader would do: the file appears
    assert marker.exists()


def test_output_rows_spots_a_model_fine_tuned_to_other_classes():
    own = small(1000)
    assert output_rows(own, small(7).state_dict(), 1000) == 7
    assert output_rows(own, small(1000).state_dict(), 1000) is None  # it fits as it is
    assert output_rows(own, small(7).state_dict(), 5) is None  # not the output layer
    other = small(7).state_dict()
    other["0.weight"] = torch.zeros(4, 3, 5, 5)  # another layer differs too
    assert output_rows(own, other, 1000) is None
    del other["0.weight"]
    assert output_rows(own, other, 1000) is None


def test_build_and_fit_builds_for_the_file_classes():
    state = small(7).state_dict()
    model, classes = build_and_fit(lambda n: small(1000 if n is None else n), state, "f", "m", 1000)
    assert classes == 7 and model[4].out_features == 7
    assert not any(t.is_meta for t in model.state_dict().values())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    x = torch.randn(2, 3, 8, 8)
    want = small(7).eval()
    want.load_state_dict(state)
    assert torch.equal(model.eval()(x), want(x))


def test_build_and_fit_names_keys_that_do_not_fit():
    state = small(10).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as exc:
        build_and_fit(lambda n: small(10), state, "file.pth", "my-net", 10)
    assert "weights file.pth do not fit my-net: unexpected keys extra.weight" in str(exc.value)


def test_build_and_fit_rebuilds_on_cpu_when_meta_leaves_buffers():
    class WithBuffer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)
            self.register_buffer("table", torch.arange(3.0), persistent=False)

        def forward(self, x):
            return self.fc(x) + self.table

    state = WithBuffer().state_dict()
    model, _ = build_and_fit(lambda n: WithBuffer(), state, "f", "m", 3)
    assert not model.table.is_meta and torch.equal(model.table, torch.arange(3.0))


def test_a_model_trained_with_add_dropblock_loads_into_the_plain_model():
    from dropblock import add_dropblock

    trained = small(7)
    add_dropblock(trained, ["1"], p=0.1, block_size=3, schedule_steps=10)
    state = trained.state_dict()
    assert "1.dropblock.step_count" in state
    model, classes = build_and_fit(lambda n: small(10 if n is None else n), state, "file.pth", "my-net", 10)
    assert classes == 7  # fitted to the file's classes, the step counter left out
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), trained.eval()(x))
    state["1.scale"] = torch.ones(1)  # any other unexpected key still fails
    with pytest.raises(WeightsError, match="unexpected keys 1.scale"):
        build_and_fit(lambda n: small(10 if n is None else n), state, "file.pth", "my-net", 10)


class Versioned(nn.Module):
    """Like torchvision's MNASNet: its ``_load_from_state_dict`` reads the version that the state dict's
    ``_metadata`` records, and refuses a dict without it."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 3)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version") not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


@pytest.mark.parametrize("wrapped", [False, True])
def test_metadata_survives_reading_and_fitting(tmp_path, wrapped):
    """A state dict saved with torch.save (also from inside DataParallel, keys ``module.``) loads into a
    module that needs its ``_metadata``. Breaks if any rebuilt dict dropped ``_metadata`` (the error above)."""
    torch.manual_seed(0)
    model = Versioned()
    saved = nn.DataParallel(model) if wrapped else model
    torch.save(saved.state_dict(), tmp_path / "v.pth")
    state = read_state_dict(tmp_path / "v.pth")
    assert state._metadata["fc"]["version"] == 1 and state._metadata[""]["version"] == 2
    fitted, classes = build_and_fit(lambda n: Versioned(), state, "v.pth", "versioned", 3)
    assert classes == 3 and torch.equal(fitted.fc.weight, model.fc.weight)


def test_build_and_fit_builds_on_the_cpu_where_the_meta_device_cannot():
    """A constructor that computes with tensors (RegNet's widths) cannot run on the meta device: the model is
    built on the CPU instead (breaks with 'Cannot copy out of meta tensor' without the fallback)."""
    class Computed(nn.Module):
        def __init__(self):
            super().__init__()
            width = int(torch.tensor([2.0, 3.0]).sum().item())  # raises on the meta device
            self.fc = nn.Linear(2, width)

    state = Computed().state_dict()
    model, classes = build_and_fit(lambda n: Computed(), state, "f", "m", 5)
    assert classes == 5 and not model.fc.weight.is_meta and torch.equal(model.fc.weight, state["fc.weight"])
