"""Every torchvision classification model (issue 17; integration: .ci/integration runs this file).

The models are ``torchvision.models.list_models(module=torchvision.models)`` when the tests are
collected, so a model that a new torchvision adds is tested too. Each is built once on the CPU
with random weights from a fixed seed (tests/allmodels.py), and its state dict saved as a .pth:

- ``load_structure`` lists its layers (on the meta device, or on the CPU where construction on
  the meta device fails: RegNet computes its widths with tensors), and the table equals one from
  plain forward hooks on the built model;
- under 100 M parameters: 4 seeded masks at one seeded random once-called 4-D layer through
  ``forward_many`` give the logits of 4 independent forward-hook passes;
- ``dropblock layers --weights FILE`` lists the same table, and under 100 M parameters
  ``dropblock show --layer`` at that layer runs from the file and predicts what the model does.

Inputs are 64x64 except where an architecture takes no such input (:data:`SIDES`).
"""

import numpy as np
import pytest
import torch

from allmodels import (IMAGE, calibrated, check_forward_group, check_forward_many, cli_layers, cli_show, hooked_table,
                       one_thread, pick_layer, saved, table_of)
from integration import require

torchvision = require("torchvision")

import dropblock.models as M  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")  # googlenet

BIG = 100_000_000  # parameters: above this no forward_many comparison, and show runs one mask (passes cost there)
SIDE = 64
#: The smallest input side of the architectures that take no 64x64 image, and why.
SIDES = {
    "inception_v3": 75,  # three stride-2 reductions and a 3x3 pool without padding: torchvision's minimum
    "maxvit_t": 224,     # 7x7 windows and 7x7 grids after a stride of 32: the side must be a multiple of 224
    "vit_b_16": 224, "vit_b_32": 224, "vit_h_14": 224, "vit_l_16": 224, "vit_l_32": 224,  # checked image size
}


def _num_params(name: str) -> int:
    """From the default weights' metadata (RegNet cannot be built on the meta device to count; GoogLeNet
    and Inception have auxiliary heads besides)."""
    return torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]


NAMES = torchvision.models.list_models(module=torchvision.models)
SMALL = [n for n in NAMES if _num_params(n) < BIG]


def side(name: str) -> int:
    return SIDES.get(name, SIDE)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def built(name, tmp_path_factory):
    """(model, weights file): ``name`` with random weights from seed 0 (BatchNorm statistics from one
    batch, under 100 M parameters), in eval mode, its state dict saved with torch.save."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    model = calibrated(model, side(name)) if _num_params(name) < BIG else model.eval()
    yield from saved(model, name, tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def structure(name):
    """``load_structure`` at the test's input side."""
    return M.load_structure(f"torchvision:{name}", input_size=side(name))


@pytest.mark.parametrize("name", NAMES, scope="module")
def test_structure_lists_the_layers_hooks_see(name, built, structure):
    """Breaks when a model cannot be built for its table (RegNet on the meta device without the CPU
    fallback), or when the table (names, shapes, call counts) differs from what hooks see."""
    model, _ = built
    assert table_of(structure.layers) == hooked_table(model, side(name))
    if _num_params(name) >= BIG and not next(structure.module.parameters()).is_meta:
        return  # built on the CPU: at 224 (regnet_y_128gf: 40 s) it shows nothing the small side does not
    default = M.load_structure(f"torchvision:{name}")  # the size that `dropblock layers` uses
    assert {li.name: li.calls for li in default.layers} == {li.name: li.calls for li in structure.layers}


@pytest.mark.parametrize("name", SMALL, scope="module")
def test_forward_many_equals_independent_passes(name, built, structure):
    """forward_many, and forward_group on two images. Breaks when a widened or grouped pass gives a wrong
    row that the check lets through, when logits_before is
    not a plain pass, or when forward_many cannot edit a once-called 4-D layer."""
    model, _ = built
    check_forward_many(model, pick_layer(structure), side(name))
    check_forward_group(model, pick_layer(structure), side(name))


@pytest.mark.parametrize("name", NAMES, scope="module")
def test_cli_from_a_state_dict_file(name, built, structure, tmp_path):
    """``layers`` and ``show --layer`` from a .pth of the model's state dict, every model (above 100 M
    parameters with one mask, since a pass is what costs there). Breaks when a builder's state dict does
    not load back (MNASNet's ``_metadata``), when RegNet cannot be built, or when show edits another
    layer or runs other weights than the file's."""
    model, weights = built
    spec = f"torchvision:{name}"
    s = side(name)
    assert cli_layers(spec, weights, s) == hooked_table(model, s)
    layer = pick_layer(structure)
    data = cli_show(spec, weights, layer, s, tmp_path / "out.png", masks=1 if _num_params(name) >= BIG else 16)
    assert (data["model"], data["layer"]) == (spec, layer)
    assert tuple(data["feature_shape"]) == hooked_table(model, s)[layer][0]
    assert_predicts_like(model, structure, data["predictions_before"])


def assert_predicts_like(model, structure, predictions):
    """The top-5 probabilities the CLI printed are the model's own on the preprocessed image."""
    from PIL import Image

    with Image.open(IMAGE) as im:
        x, _ = M.preprocess(structure, np.asarray(im.convert("RGB")))
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), -1)[0]
    want = probs.topk(len(predictions)).values.tolist()
    assert [q["prob"] for q in predictions] == pytest.approx(want, rel=1e-3, abs=1e-6)
