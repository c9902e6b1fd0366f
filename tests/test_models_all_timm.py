"""timm's CNN families, the smallest variant of each (issue 17; integration: .ci/integration runs
this file), and headless models.

Each model is built once on the CPU with random weights from a fixed seed (tests/allmodels.py),
its state dict saved as a .pth:

- ``load_structure`` lists its layers, and the table equals one from plain forward hooks;
- 4 seeded masks at one seeded random once-called 4-D layer through ``forward_many`` give the
  logits of 4 independent forward-hook passes;
- for :data:`CLI`: ``dropblock layers`` and ``dropblock show --layer`` run from the file;
- headless models (``num_classes=0`` in their pretrained config): ``layers`` lists them, with or
  without a weights file, and the ``--layer`` runs refuse them in one line.

Inputs are 64x64 except where an architecture takes no such input (:data:`SIDES`).
"""

import pytest
import torch

from allmodels import (calibrated, check_forward_group, check_forward_many, cli_layers, cli_show, hooked_table,
                       one_thread, pick_layer, saved, table_of)
from clirun import run
from integration import require

timm = require("timm")

import dropblock.models as M  # noqa: E402

#: The smallest variant of each family (the comment names the family where the name does not).
ARCHS = [
    "resnet10t", "resnext26ts", "regnetx_002", "regnetz_005", "efficientnet_b0", "mobilenetv3_small_050",
    "mobilenetv2_035", "convnext_atto", "densenet121", "dla46_c", "dpn48b", "ghostnet_050", "ghostnetv2_100",
    "repghostnet_050", "hrnet_w18_small", "inception_v3", "inception_next_atto", "mixnet_s",
    "nf_regnet_b0",            # NFNet: no normalization, scaled weights, skip gains
    "rexnet_100", "res2net50_14w_8s", "selecsls42b",
    "legacy_seresnet18",       # SENet
    "cspresnet50", "cs3darknet_s", "darknet17",
    "ese_vovnet19b_slim_dw",   # VoVNet
    "xception41", "tresnet_m", "repvgg_a0", "mobileone_s0", "mobilevit_xxs",
    "levit_conv_128s",         # LeViT with 4-D maps throughout
    "gernet_s", "lcnet_050", "fbnetc_100", "tinynet_e", "hardcorenas_a", "spnasnet_100", "semnasnet_050",
    "mnasnet_small", "skresnet18", "resnest14d", "gcresnet33ts", "ecaresnet26t", "edgenext_xx_small",
    "efficientvit_b0", "fastvit_t8", "hgnetv2_b0", "starnet_s050", "poolformerv2_s12", "mambaout_femto",
]
SIDE = 64
#: The smallest input side of the architectures that take no 64x64 image, and why.
SIDES = {
    "inception_v3": 75,       # stride-2 reductions and 3x3 convolutions without padding
    "levit_conv_128s": 224,   # attention biases for the 14x14, 7x7 and 4x4 grids of a 224 input
}
#: Where the CLI runs too: a few families with different shapes of code after the layers.
CLI = ["resnet10t", "efficientnet_b0", "densenet121", "hrnet_w18_small", "levit_conv_128s", "nf_regnet_b0",
       "mobilevit_xxs", "dpn48b"]
#: Headless: the pretrained config says num_classes=0, so the model returns features, not logits.
HEADLESS = ["convnextv2_atto.fcmae", "resnet50_clip_gap.openai"]


def side(name: str) -> int:
    return SIDES.get(name, SIDE)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def built(name, tmp_path_factory):
    """(model, weights file): ``name`` with random weights from seed 0 (BatchNorm statistics from one
    batch), in eval mode, its state dict saved with torch.save."""
    torch.manual_seed(0)
    yield from saved(calibrated(timm.create_model(name), side(name)), name, tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def structure(name):
    """``load_structure`` at the test's input side."""
    return M.load_structure(f"timm:{name}", input_size=side(name))


@pytest.mark.parametrize("name", ARCHS, scope="module")
def test_structure_lists_the_layers_hooks_see(name, built, structure):
    """Breaks when a model cannot be built for its table, or when the table (names, shapes, call
    counts) differs from what hooks see."""
    model, _ = built
    assert table_of(structure.layers) == hooked_table(model, side(name))
    default = M.load_structure(f"timm:{name}")  # the size that `dropblock layers` uses
    assert {li.name: li.calls for li in default.layers} == {li.name: li.calls for li in structure.layers}


@pytest.mark.parametrize("name", ARCHS, scope="module")
def test_forward_many_equals_independent_passes(name, built, structure):
    """forward_many, and forward_group on two images. Breaks when a widened or grouped pass gives a wrong
    row that the check lets through, when logits_before is
    not a plain pass, or when forward_many cannot edit a once-called 4-D layer."""
    model, _ = built
    check_forward_many(model, pick_layer(structure), side(name))
    check_forward_group(model, pick_layer(structure), side(name))


@pytest.mark.parametrize("name", CLI, scope="module")
def test_cli_from_a_state_dict_file(name, built, structure, tmp_path):
    """``layers`` and ``show --layer`` from a .pth of the model's state dict. Breaks when the file
    does not load back, or when show edits another layer than asked."""
    model, weights = built
    spec = f"timm:{name}"
    assert cli_layers(spec, weights, side(name)) == hooked_table(model, side(name))
    layer = pick_layer(structure)
    data = cli_show(spec, weights, layer, side(name), tmp_path / "out.png")
    assert (data["model"], data["layer"]) == (spec, layer)
    assert tuple(data["feature_shape"]) == hooked_table(model, side(name))[layer][0]


@pytest.mark.parametrize("name", HEADLESS)
def test_headless_models_list_their_layers(name, sample_images, tmp_path):
    """A model without a classifier head lists its layers, from its structure and from a weights file
    of its own (which once got ImageNet's 1000 class names for its 320 features, and failed);
    ``show --layer`` refuses it in one line (exit 2) instead of naming features as classes."""
    spec = f"timm:{name}"
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    assert model.num_classes == 0
    structure = M.load_structure(spec, input_size=SIDE)
    assert structure.num_classes == 0 and structure.trace.output_shape == (1, model.num_features)
    table = hooked_table(model, SIDE)
    assert table_of(structure.layers) == table
    torch.save(model.state_dict(), tmp_path / "h.pth")
    assert cli_layers(spec, tmp_path / "h.pth", SIDE) == table
    layer = pick_layer(structure)
    r = run("show", sample_images / "coffee.jpg", "--model", spec, "--weights", tmp_path / "h.pth", "--layer", layer,
            "--input-size", SIDE, "-o", tmp_path / "o.png")
    assert r.exit_code == 2 and "headless" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o.png").exists()
