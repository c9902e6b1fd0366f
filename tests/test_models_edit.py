"""dropblock.models.edit: N edits of one layer through one forward hook, checked against plain passes.

The reference is always independent of the code under test: a plain forward hook that returns
``edit(output)`` (tests/edits.py), one image at a time.
"""

import pathlib
import re

import pytest
import torch
from torch import nn

import dropblock.models.edit as E
from dropblock.models import LayerError, ModelLoadError, forward_many
from tests.edits import hooked_logits, masker


class Joins(nn.Module):
    """DenseNet/GoogLeNet-like: after the target, a map from before it is joined by cat (channels) and
    stack, which do not broadcast a batch of 1 against a batch of N."""

    def __init__(self, mix: float = 0.0, view: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, 2, 1)
        self.target = nn.Conv2d(4, 4, 3, 1, 1)
        self.after = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(8, 5)
        self.mix, self.view = mix, view

    def forward(self, x):
        b = x.shape[0]
        s = torch.relu(self.stem(x))
        t = self.target(s)
        y = self.after(torch.cat([s, t], dim=1))
        y = torch.stack([y, s], dim=1).sum(1) + s
        if self.mix:
            y = y + self.mix * y.flip(0)  # mixes the rows of the batch
        if self.view:
            y = y.reshape(b, -1, *y.shape[2:])  # the batch size read before the target
        pooled = torch.cat([y.mean((2, 3)), s.amax((2, 3))], 1)
        return self.fc(pooled)


class Twice(nn.Module):
    """Its ``act`` runs twice in a pass: not one map."""

    def __init__(self):
        super().__init__()
        self.act, self.fc = nn.ReLU(), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.act(self.act(x)).mean((2, 3)))


class Fails(Joins):
    """Raises after a whole pass."""

    def forward(self, x):
        super().forward(x)
        raise RuntimeError("boom")


def nan_logits() -> Joins:
    """Joins whose first logit is NaN."""
    nan = Joins()
    with torch.no_grad():
        nan.fc.bias[0] = float("nan")
    return nan


X = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
EDITS = [masker(s, 0.4) for s in range(5)]


def assert_matches_hooks(model, layer, edits, run):
    for i, edit in enumerate(edits):
        want = hooked_logits(model, X, layer, edit)[0]
        assert torch.allclose(run.logits_after[i], want, atol=1e-5, rtol=1e-5), i
    with torch.no_grad():
        assert torch.allclose(run.logits_before[0], model(X)[0], atol=1e-5, rtol=1e-5)


def test_joins_broadcast_in_the_widened_pass():
    """cat and stack of a batch-1 map from before the target with the batch-N one: the widened pass
    is exact (breaks without BroadcastJoins: the pass raises and falls back to 'expanded')."""
    model = Joins()
    run = forward_many(model, X, "target", EDITS, batch_size=2)
    assert run.strategy == "widened"
    assert_matches_hooks(model, "target", EDITS, run)


def test_a_model_that_mixes_rows_is_caught_by_the_check(monkeypatch):
    """Code after the target that mixes the batch's rows: the check against plain passes sends the
    edits to one pass each. Without the check (``logits_close`` always true) the rows are wrong, which the
    second half shows, so this test fails if the check is removed."""
    model = Joins(mix=0.5)
    run = forward_many(model, X, "target", EDITS)
    assert run.strategy == "single"
    assert_matches_hooks(model, "target", EDITS, run)
    E._checked.clear()
    monkeypatch.setattr(E, "logits_close", lambda a, b: True)
    wrong = forward_many(model, X, "target", EDITS)
    assert wrong.strategy == "widened"
    assert not torch.allclose(wrong.logits_after, run.logits_after, atol=1e-3)


def test_a_batch_size_read_before_the_target_falls_back_to_an_expanded_input():
    """``reshape(b, ...)`` with b read before the target returns other than N rows when widened; the
    edits then run on an N-row input (breaks if a wrong row count were accepted)."""
    model = Joins(view=True)
    run = forward_many(model, X, "target", EDITS)
    assert run.strategy == "expanded"
    assert_matches_hooks(model, "target", EDITS, run)


def test_each_edit_runs_once_in_order_and_the_check_runs_once():
    """Stateful edits (a generator drawing masks) see each call once, in order; the plain passes of
    the check run on the first call for a (model, layer) only (breaks if the check ran every time)."""
    model, calls, passes = Joins(), [], []
    handle = model.register_forward_pre_hook(lambda m, a: passes.append(1))
    edits = [lambda f, i=i: calls.append(i) or f * 0.5 for i in range(5)]
    try:
        forward_many(model, X, "stem", edits, batch_size=2)
        assert calls == list(range(5))
        first, calls[:] = len(passes), []
        passes.clear()
        forward_many(model, X, "stem", edits, batch_size=2)
    finally:
        handle.remove()
    assert calls == list(range(5)) and first == 5 and len(passes) == 3  # 3 batches, no plain pass


def test_layer_errors_and_failures_leave_no_hook_and_no_mode():
    """A module that runs twice, or outputs no map, is a LayerError; a model that fails or returns NaN
    is a ModelLoadError; afterwards no hook is left and no mode is active (a cat of batch 1 with batch 2
    raises again)."""
    with pytest.raises(LayerError, match="runs 2 times"):
        forward_many(Twice(), X, "act", EDITS)
    with pytest.raises(LayerError, match="not an"):
        forward_many(Twice(), X, "fc", EDITS)
    with pytest.raises(ModelLoadError, match="NaN"):
        forward_many(nan_logits(), X, "target", EDITS)
    model = Fails()
    with pytest.raises(ModelLoadError, match="boom"):
        forward_many(model, X, "target", EDITS)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError):
        torch.cat([torch.zeros(1, 2, 2), torch.zeros(2, 3, 2)], dim=1)


def test_no_private_torch_api_in_the_package():
    """The package uses public torch API only (breaks on torch._C, a rewritten forward, or a read
    version counter anywhere under dropblock/)."""
    root = pathlib.Path(__file__).resolve().parents[1] / "dropblock"
    bad = re.compile(r"torch\._C\b|__dict__\[['\"]forward|\._version\b|_push_on_torch_function_stack")
    hits = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert hits == []


def test_kept_maps_are_safe_from_in_place_ops_after_the_target():
    """A ReLU(inplace=True) right after the target mutates the batch the hook returned: the edited maps that
    forward_many keeps (and falls back on) must be the edits' own output, not the ReLU'd batch (breaks if
    the kept maps were a view of the batch handed to the model)."""
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.relu, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.relu(self.conv(x)).mean((2, 3)))

    model = InPlace()
    run = forward_many(model, X, "conv", [lambda f: f - 1.0, lambda f: f * -1.0], keep_features=True)
    want = torch.cat([run.feature_before - 1.0, -run.feature_before])
    assert torch.equal(run.features_after, want) and bool((want < 0).any())
    run = forward_many(model, X, "conv", [lambda f: f - 1.0, lambda f: f * -1.0], keep_features=True)  # trusted path
    assert torch.equal(run.features_after, want)
    assert_matches_hooks(model, "conv", [lambda f: f - 1.0, lambda f: f * -1.0], run)


def test_single_passes_over_several_batches_and_calls():
    """A row-mixing model with 5 edits in batches of 2, twice (the checked call, then the remembered
    'single' strategy): every row equals a plain hook pass and the kept maps are the edits' (breaks if a
    later batch took its maps from an edited pass instead of the unedited map)."""
    model = Joins(mix=0.5)
    for _ in range(2):
        run = forward_many(model, X, "target", EDITS, batch_size=2, keep_features=True)
        assert run.strategy == "single" and run.features_after.shape[0] == len(EDITS)
        assert torch.equal(run.features_after[3:4], EDITS[3](run.feature_before.clone()))
        assert_matches_hooks(model, "target", EDITS, run)


@pytest.mark.parametrize("mix, view, strategy", [(0.0, False, "widened"), (0.0, True, "expanded"),
                                                 (0.5, False, "single")])
def test_without_the_clean_row_the_passes_hold_only_the_edits(mix, view, strategy):
    """``clean=False`` on a remembered (model, layer): each batch holds the edits alone (rows counted at the
    last layer: 2 + 2 + 1 for 5 edits in batches of 2, where the clean row would make the first 3), the rows
    and the unedited map are what a plain hook gives, and there are no clean logits. Breaks if the unedited
    row still rode in a batch, or if a strategy took the unedited map from nowhere (single: no earlier pass)."""
    model, rows = Joins(mix=mix, view=view), []
    forward_many(model, X, "target", EDITS, batch_size=2)  # the checked first call
    handle = model.fc.register_forward_hook(lambda m, a, out: rows.append(out.shape[0]))
    try:
        run = forward_many(model, X, "target", EDITS, batch_size=2, keep_features=True, clean=False)
    finally:
        handle.remove()
    assert run.strategy == strategy and run.logits_before is None
    assert rows == ([2, 2, 1] if strategy != "single" else [1] * 6)  # single: a plain pass for the map
    for i, edit in enumerate(EDITS):
        assert torch.allclose(run.logits_after[i], hooked_logits(model, X, "target", edit)[0], atol=1e-5), i
    with torch.no_grad():
        want = model.target(torch.relu(model.stem(X)))
    assert torch.allclose(run.feature_before, want, atol=1e-6)


@pytest.mark.parametrize("x", [torch.zeros(2, 3, 16, 16), torch.zeros(1, 1, 16, 16), torch.zeros(3, 16, 16),
                               "image"])
def test_anything_but_one_rgb_image_is_refused_with_its_shape(x):
    """x must be (1, 3, H, W): a batch, a grey image, a 3-D tensor or no tensor is a usage error (exit 2 in the
    CLI) that quotes what was given (breaks if the check went, e.g. a batch of 2 widened as if one image)."""
    from dropblock.errors import UsageError

    with pytest.raises(UsageError, match=r"\(1, 3, H, W\), got " + re.escape(
            str(tuple(x.shape)) if torch.is_tensor(x) else "str")):
        forward_many(Joins(), x, "target", EDITS)
