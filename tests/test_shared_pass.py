"""dropblock.shared_pass: several images' edits of one layer in one pass, checked against plain passes.

The reference is independent of the code under test: per image, a plain pass, and a plain pass with a
forward hook returning ``edit(output)`` (tests/edits.py).
"""

import pytest
import torch
from torch import nn

from dropblock.models import LayerError, ModelLoadError, forward_many
from dropblock.shared_pass import forward_group
from dropblock.models.edit import EditShapeError
from tests.edits import hooked_logits, masker
from tests.test_models_edit import Fails, Joins, Twice, nan_logits

X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
EDITS = [[masker(1, 0.4), masker(2, 0.4)], [masker(3, 0.4), masker(4, 0.4), masker(5, 0.4)], [masker(6, 0.4)]]


def assert_matches_hooks(model, layer, edits, runs, x=X, tol=1e-5):
    """Run g equals image g's plain pass and, edit by edit, its hooked passes."""
    assert len(runs) == len(edits)
    for g, run in enumerate(runs):
        image = x[g:g + 1]
        with torch.no_grad():
            assert torch.allclose(run.logits_before, model(image), atol=tol, rtol=tol), g
        want = torch.cat([hooked_logits(model, image, layer, edit) for edit in edits[g]])
        assert torch.allclose(run.logits_after, want, atol=tol, rtol=tol), (g, run.strategy)
        assert run.feature_before.shape[0] == 1


def counting(model):
    """(model, passes): ``passes`` gets the batch size of every forward pass of ``model``."""
    passes = []
    model.register_forward_pre_hook(lambda m, args: passes.append(args[0].shape[0]))
    return model, passes


def test_one_pass_for_all_images_through_joins_and_skips():
    """Joins and a skip connection after the target meet the images' rows: each image's row is repeated
    for its own edits (breaks if rows were repeated in the wrong order, or broadcast from image 0). The
    checked call runs the images apart once; the next call is one pass of the 3 images."""
    model, passes = counting(Joins())
    runs = forward_group(model, X, "target", EDITS)
    assert [r.strategy for r in runs] == ["grouped"] * 3
    assert_matches_hooks(model, "target", EDITS, runs)
    passes.clear()
    again = forward_group(model, X, "target", EDITS)
    assert passes == [3]
    for a, b in zip(runs, again):
        assert torch.equal(a.logits_after, b.logits_after)


def test_a_model_that_mixes_rows_runs_the_images_apart():
    """Row mixing makes the grouped pass wrong; the check sees it and every later call runs image by image
    (no grouped pass is tried again)."""
    model, passes = counting(Joins(mix=0.5))
    runs = forward_group(model, X, "target", EDITS)
    assert "grouped" not in {r.strategy for r in runs}
    assert_matches_hooks(model, "target", EDITS, runs)
    passes.clear()
    assert_matches_hooks(model, "target", EDITS, forward_group(model, X, "target", EDITS))
    assert 3 not in passes


def test_a_batch_size_read_before_the_target_runs_the_images_apart():
    model = Joins(view=True)
    runs = forward_group(model, X, "target", EDITS)
    assert "grouped" not in {r.strategy for r in runs}
    assert_matches_hooks(model, "target", EDITS, runs)


class FirstRowOnly(Joins):
    """Its target runs on the first image of the batch only (as a layer inside swin_v2_t's blocks can see
    fewer rows than the input has): one map per image alone, one map for the whole group."""

    def forward(self, x):
        s = torch.relu(self.stem(x))
        y = s + self.target(s[:1])
        return self.fc(torch.cat([y.mean((2, 3)), s.amax((2, 3))], 1))


def test_a_target_with_fewer_rows_than_images_runs_the_images_apart():
    model = FirstRowOnly()
    runs = forward_group(model, X, "target", EDITS)
    assert "grouped" not in {r.strategy for r in runs}
    assert_matches_hooks(model, "target", EDITS, runs)


def test_a_last_group_of_other_sizes_is_checked_on_its_own():
    """Another number of rows per image is another pass: checked again, and right."""
    model = Joins()
    forward_group(model, X, "target", EDITS)
    edits = [[masker(7, 0.4)], [masker(8, 0.4)]]
    runs = forward_group(model, X[:2], "target", edits)
    assert_matches_hooks(model, "target", edits, runs)


@pytest.mark.parametrize("spec, layer", [("efficientnet-lite0", "blocks.8"), ("efficientnet-lite0", "head"),
                                         ("resnet18", "layer3.1"), ("resnet50", "layer3.1.bn2")])
def test_built_in_networks_group_and_equal_hooks(spec, layer):
    """The built-in networks (random weights: the weights do not matter here) take the grouped pass, at a
    residual block, inside one (a skip connection after the target) and at the head."""
    from dropblock.models import build_model

    torch.manual_seed(0)
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    edits = [[masker(1), masker(2)], [masker(3)]]
    runs = forward_group(model, x, layer, edits)
    assert [r.strategy for r in runs] == ["grouped"] * 2
    path = model.layer_paths.get(layer, layer)
    for g, run in enumerate(runs):
        alone = forward_many(model, x[g:g + 1], layer, edits[g])
        assert torch.allclose(run.logits_after, alone.logits_after, atol=1e-4, rtol=1e-4)
        want = torch.cat([hooked_logits(model, x[g:g + 1], path, e) for e in edits[g]])
        assert torch.allclose(run.logits_after, want, atol=1e-4, rtol=1e-4)


def test_bad_arguments_quote_what_was_given():
    with pytest.raises(ValueError, match=r"\(3, 3, 16, 16\) and 2 lists"):
        forward_group(Joins(), X, "target", EDITS[:2])
    with pytest.raises(ValueError, match="non-empty"):
        forward_group(Joins(), X, "target", [[], [masker(1)], [masker(2)]])
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        forward_group(Joins(), X[0], "target", EDITS)
    with pytest.raises(EditShapeError):
        forward_group(Joins(), X, "target", [[lambda f: f[:, :1]]] * 3)


def test_failures_leave_no_hook_and_no_mode():
    """A layer that runs twice is a LayerError, a failing model a ModelLoadError, NaN logits too; afterwards
    no hook is left and no mode is active (a cat of 3 rows with 9 raises again)."""
    with pytest.raises(LayerError, match="runs 2 times"):
        forward_group(Twice(), X, "act", EDITS)
    model = Fails()
    with pytest.raises(ModelLoadError, match="boom"):
        forward_group(model, X, "target", EDITS)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ModelLoadError, match="NaN"):
        forward_group(nan_logits(), X, "target", EDITS)
    with pytest.raises(RuntimeError):
        torch.cat([torch.zeros(3, 2, 2), torch.zeros(9, 3, 2)], dim=1)
