"""dropblock.models.hooks (via forward_many): editing any module's output of any model.

The hook path must give what a plain forward hook gives, whether or not it reuses the prefix,
and the same logits as the built-ins' stepped path.
"""

import weakref

import pytest
import torch
from edits import assert_edits_match_hooks, hooked_logits, masker
from torch import nn

import dropblock.models as M
import dropblock.models.hooks as H
from dropblock.models.errors import LayerError, ModelLoadError


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    return M.build_model("resnet18")


@pytest.fixture(scope="module")
def lite():
    return M.load_model("efficientnet-lite0")  # pretrained: random init barely reacts to edits


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def reruns(monkeypatch):
    """Records, per batch, whether the rerun reused the prefix."""
    seen = []
    real = H._rerun

    def spy(model, x, target, edited, reuse, modules):
        seen.append(bool(reuse))
        return real(model, x, target, edited, reuse, modules)

    monkeypatch.setattr(H, "_rerun", spy)
    return seen


@pytest.mark.parametrize("model_name,layer", [
    ("efficientnet-lite0", "stem"), ("efficientnet-lite0", "blocks.3"),
    ("efficientnet-lite0", "blocks.11"), ("efficientnet-lite0", "head"),
    ("resnet18", "stem"), ("resnet18", "layer2"), ("resnet18", "layer3.1"), ("resnet18", "layer4"),
])
def test_hooks_and_steps_agree_on_the_builtins(model_name, layer, lite, r18, x, reruns):
    model = lite if model_name == "efficientnet-lite0" else r18
    edits = [masker(s) for s in range(5)]
    steps = M.forward_many(model, x, layer, edits, batch_size=3, via="steps", keep_features=True)
    hooks = M.forward_many(model, x, layer, edits, batch_size=3, via="hooks", keep_features=True)
    assert hooks.layer == steps.layer == layer
    assert torch.equal(hooks.feature_before, steps.feature_before)
    assert torch.equal(hooks.features_after, steps.features_after)
    assert torch.allclose(hooks.logits_before, steps.logits_before, atol=1e-6, rtol=1e-6)
    assert torch.allclose(hooks.logits_after, steps.logits_after, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hooks.logits_after[0], hooks.logits_before[0], atol=1e-4)
    assert len(reruns) == 2 and len(set(reruns)) == 1  # one rerun a batch: none fell back


@pytest.mark.parametrize("layer,start", [
    ("_head_act", 17), ("_bn1", 17), ("_blocks.5._depthwise_conv", 6), ("_blocks.5", 6),
    ("_stem_act", 0), ("_conv_stem", 0),
])
def test_a_builtin_runs_the_steps_before_the_target_once(lite, x, layer, start):
    """The clean pass and the reruns start at the first step that calls the target; the steps
    before it run once, and the edits still equal a forward hook on the whole network."""
    assert lite.first_step(layer) == start
    with torch.no_grad():
        clean = H.clean_pass(lite, x, layer, "lite")
        assert torch.equal(clean.input, lite.forward_range(x, 0, start))
    assert_edits_match_hooks(lite, x, [layer], [masker(s) for s in range(3)])


@pytest.mark.parametrize("name", ["efficientnet-lite0", "resnet18", "resnet50"])
def test_every_step_names_the_modules_it_calls(name):
    """step_modules has one entry a step, each a module, and each step calls exactly those of
    the network's direct children (and stages) that it names."""
    net = M.build_model(name).eval()
    modules = dict(net.named_modules())
    assert len(net.step_modules) == len(net.step_names)
    x = torch.randn(1, 3, 64, 64)
    for index, names in enumerate(net.step_modules):
        assert all(n in modules for n in names)
        calls = []
        watched = {n for step in net.step_modules for n in step} | dict(net.named_children()).keys()
        handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: calls.append(n))
                   for n in watched]
        try:
            with torch.no_grad():
                x = net.run_step(index, x)
        finally:
            for h in handles:
                h.remove()
        assert sorted(calls) == sorted(names), (index, calls)


def test_a_failure_in_the_steps_before_the_target_is_a_model_error(r18, x, monkeypatch):
    def fails(t):
        raise RuntimeError("boom")

    monkeypatch.setattr(r18.layer1[0], "forward", fails)
    with pytest.raises(ModelLoadError, match="a forward pass of .* failed: RuntimeError: boom"):
        M.forward_many(r18, x, "layer3.0.conv2", [masker(0)])


def test_first_step_of_a_builtin(r18):
    assert [r18.first_step(p) for p in ("conv1", "relu", "layer1", "layer1.1.conv2", "layer4",
                                        "fc", "")] == [0, 0, 1, 2, 7, 9, 0]


@pytest.mark.parametrize("layer", [
    "layer3.0.conv2",            # a convolution inside a residual block
    "layer3.0.bn1",              # followed by an in-place ReLU
    "layer3.0.downsample",       # the skip connection
    "layer2.1.bn2", "maxpool", "conv1",
])
def test_any_module_equals_a_forward_hook(r18, x, layer, reruns):
    edits = [masker(s) for s in range(4)]
    run = M.forward_many(r18, x, layer, edits, batch_size=4)
    # nothing to reuse where the target is the first call of its step (the steps before it ran once)
    assert run.layer == layer and reruns == [layer not in ("conv1", "layer3.0.downsample")]
    for i, edit in enumerate(edits):
        want = hooked_logits(r18, x, layer, edit)
        assert torch.allclose(run.logits_after[i], want[0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert torch.allclose(run.logits_before, r18(x), atol=1e-6, rtol=1e-6)


class ConvTargetFc(nn.Module):
    """Seeded layers for small test networks: ``a`` (3 -> 4 channels), ``target`` (4 -> 4) and
    ``fc`` (8 -> ``classes``)."""

    def __init__(self, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.target = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8, classes)


class InPlaceOnReused(ConvTargetFc):
    """Edits a finished module's output in place after the target ran (always, or only in
    batches, where the reused map is a stride-0 view that cannot be written)."""

    def __init__(self, batched_only: bool):
        super().__init__(classes=5)
        self.batched_only = batched_only

    def forward(self, x):
        a = self.a(x)
        t = self.target(a)
        if x.shape[0] > 1 or not self.batched_only:
            a.mul_(2)
        return self.fc(torch.cat([a, t], 1).mean((2, 3)))


@pytest.mark.parametrize("batched_only,used", [(False, [False]), (True, [True, False])])
def test_in_place_edits_of_finished_maps_stay_exact(batched_only, used, reruns):
    """Edited in the clean pass too: not reused. Edited only in batches: the reuse raises and the
    batch is rerun without it."""
    model = InPlaceOnReused(batched_only).eval()
    x = torch.randn(1, 3, 8, 8)
    edits = [masker(s) for s in range(3)]
    run = M.forward_many(model, x, "target", edits)
    assert reruns == used
    for i, edit in enumerate(edits):
        want = hooked_logits(model, x.repeat(2, 1, 1, 1), "target", edit)[0]  # a batch, as the run
        assert torch.allclose(run.logits_after[i], want, atol=1e-6)


class SharedAct(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.act(self.c2(self.act(self.c1(x)))).mean((2, 3)))


def test_layer_errors_name_nearby_layers():
    model = SharedAct().eval()
    x = torch.randn(1, 3, 10, 10)
    with pytest.raises(LayerError) as exc:
        M.forward_many(model, x, "act", [lambda f: f])
    assert "runs 2 times in one forward pass" in str(exc.value)
    assert "layers near it that run once: c1, c2" in str(exc.value)
    with pytest.raises(LayerError, match=r"'fc' of SharedAct outputs shape \(1, 3\), not an"):
        M.forward_many(model, x, "fc", [lambda f: f])
    with pytest.raises(M.UnknownNameError) as exc:
        M.forward_many(model, x, "c22", [lambda f: f])
    assert exc.value.close == ["c2"]


def test_not_logits_and_bad_edits():
    with pytest.raises(ModelLoadError, match=r"returns shape \(1, 4, 8, 8\) for one image"):
        M.forward_many(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.randn(1, 3, 10, 10), "0",
                       [lambda f: f])
    model = SharedAct().eval()
    with pytest.raises(ValueError, match="edit must return"):
        M.forward_many(model, torch.randn(1, 3, 10, 10), "c1", [lambda f: f[:, :2]])
    with pytest.raises(ValueError, match="via='steps' needs a built-in"):
        M.forward_many(model, torch.randn(1, 3, 10, 10), "c1", [lambda f: f], via="steps")


def test_model_mode_restored_and_loaded_model_accepted(tmp_path):
    model = SharedAct().train()
    loaded = M.LoadedModel(model, "shared", M.Preprocessing(12, 10, 2, 255.0, (0, 0, 0), (1, 1, 1)),
                           ("a", "b", "c"), "own code")
    run = M.forward_many(loaded, torch.randn(1, 3, 10, 10), "c2", [lambda f: f * 0])
    assert model.training and run.logits_after.shape == (1, 3)


class StemWithGlue(nn.Module):
    """bn then an in-place ReLU, with (read_between) or without code reading bn's map in between."""

    def __init__(self, read_between: bool):
        super().__init__()
        torch.manual_seed(0)
        self.read_between = read_between
        self.conv, self.bn, self.relu = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True)
        self.bn.running_mean.fill_(0.3)  # so the ReLU changes something
        self.target = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.bn(self.conv(x))
        side = y.mean((2, 3)) if self.read_between else x.new_zeros(x.shape[0], 4)
        y = self.relu(y)
        return self.fc(torch.cat([self.target(y).mean((2, 3)), side], 1))


@pytest.mark.parametrize("read_between", [False, True])
def test_a_map_edited_in_place_by_the_next_call_is_reused_only_if_unread(read_between):
    model = StemWithGlue(read_between).eval()
    x = torch.randn(1, 3, 10, 10)
    with torch.no_grad():
        clean = H.clean_pass(model, x, "target", "m")
    assert sorted(name for name, _ in clean.reuse) == (["conv", "relu"] if read_between
                                                      else ["bn", "conv", "relu"])
    edits = [masker(s) for s in range(3)]
    run = M.forward_many(model, x, "target", edits)
    for i, edit in enumerate(edits):
        assert torch.allclose(run.logits_after[i], hooked_logits(model, x, "target", edit)[0],
                              atol=1e-6)


class OneImageOnly(SharedAct):
    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError("batches not supported")
        return super().forward(x)


def test_forwards_are_restored_even_when_the_rerun_fails():
    model = OneImageOnly().eval()
    forwards = {name: m.forward for name, m in model.named_modules()}
    with pytest.raises(ZeroDivisionError):  # an edit's own error reaches the caller
        M.forward_many(model, torch.randn(1, 3, 10, 10), "c2", [lambda f: 1 / 0 * f])
    with pytest.raises(ModelLoadError, match="with c2 edited failed: RuntimeError: batches not"):
        M.forward_many(model, torch.randn(1, 3, 10, 10), "c2", [lambda f: f, lambda f: f])
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert {name: m.forward for name, m in model.named_modules()} == forwards


class Glue(ConvTargetFc):
    """``a`` then glue then the target. ``keep``: what of it is read after the target."""

    def __init__(self, keep: str):
        super().__init__(classes=3)
        self.keep = keep

    def forward(self, x):
        y = self.a(x)
        side = x.new_zeros(x.shape[0], 4, *x.shape[2:])
        if self.keep == "number":
            side += 2.0 if y.amax() > 0 else 3.0
        y = torch.relu(y)  # a's map is dropped once relu has read it
        if self.keep == "input":
            side = y
        elif self.keep == "mean":
            side = y.mean((2, 3), keepdim=True).expand_as(y)
        y = self.target(y)  # the target's input is dropped here, unless ``side`` is it
        return self.fc(torch.cat([y, side], 1).mean((2, 3)))


@pytest.mark.parametrize("keep,placeholders", [
    ("none", {("a", 0)}),       # glue made the target's input from a dropped map: not read again
    ("input", set()),           # the target's input is read again: every map is held
    ("mean", set()),            # a value computed from it is read again
    ("number", set()),          # a number read from it chose a value
])
def test_maps_the_model_dropped_stand_in_only_where_nothing_reads_them(keep, placeholders):
    model = Glue(keep).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        clean = H.clean_pass(model, x, "target", "m")
    assert set(clean.placeholders) == placeholders
    assert_edits_match_hooks(model, x, ["target"], [masker(s) for s in range(3)], atol=1e-6)


class Wrapped(nn.Module):
    """A network that is not a built-in (so the whole pass is recorded)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def test_the_clean_pass_frees_maps_as_a_plain_pass_does(lite, x):
    """At the target's start no map that the model dropped is still alive (the pass holds weak
    references only); the rerun stands in with zero placeholders for them."""
    seen, alive_at_target = [], []
    model = Wrapped(lite).eval()

    def keep_a_weak_reference(module, args, out):
        seen.append(weakref.ref(out))

    h1 = lite.get_submodule("_conv_stem").register_forward_hook(keep_a_weak_reference)
    h2 = lite.get_submodule("_head_act").register_forward_pre_hook(
        lambda m, a: alive_at_target.append(seen[0]() is not None))
    try:
        with torch.no_grad():
            clean = H.clean_pass(model, x, "net._head_act", "lite")
    finally:
        h1.remove()
        h2.remove()
    assert alive_at_target == [False]
    assert {("net._conv_stem", 0), ("net._blocks.15", 0)} <= set(clean.placeholders)
    stand_in = clean.batched(2)[("net._conv_stem", 0)][0]
    assert stand_in.shape == (2, 32, 48, 48) and not stand_in.any() and set(stand_in.stride()) == {0}
    assert_edits_match_hooks(model, x, ["net._head_act"], [masker(s) for s in range(3)])
