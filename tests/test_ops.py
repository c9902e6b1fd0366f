"""DropBlock under torch.fx, torch.compile and torch.export: the custom ops in dropblock.ops.

torch.fx records a traced call as one node (dropblock.ops.drop_block2d); torch.compile and torch.export
see the custom op torch.ops.dropblock.drop_block2d. For the same torch.manual_seed either gives the
eager call's output and gradients, on every backend.
"""

import pytest
import torch
from torch import nn

from conftest import ON_TRITON, needs_cuda
from dropblock import DropBlock2d, ops
from dropblock.functional import drop_block2d
from integration import require

OP = torch.ops.dropblock.drop_block2d.default


def net(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DropBlock2d(0.2, 3, **kwargs), nn.ReLU(), nn.Conv2d(8, 4, 1)).train()


def run_seeded(model, x, seed=1):
    """Output and input gradient of model(x), with torch's default generator seeded first."""
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    y = model(x)
    (y * torch.linspace(0.5, 1.5, y.numel(), device=y.device).view_as(y)).sum().backward()
    return y.detach(), x.grad


def image(seed=0):
    return torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(seed))


def assert_same_run(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1])


def test_fx_symbolic_trace_records_one_node_that_matches_eager(backend):
    model = net()
    gm = torch.fx.symbolic_trace(model)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert [n.name for n in nodes if n.target is ops.drop_block2d] == ["drop_block2d"]
    x = image().to(backend)
    assert_same_run(run_seeded(gm.to(backend), x), run_seeded(model.to(backend), x))


def test_fx_traces_the_functional_form_and_inplace():
    def f(x):
        return drop_block2d(x * 1.0, 0.3, 4, True, rescale="sample", shared_channels=True, gamma="exact") + 1

    gm = torch.fx.symbolic_trace(f)
    x = image()
    torch.manual_seed(2)
    expect = f(x)
    torch.manual_seed(2)
    assert torch.equal(gm(x), expect) and (expect == 1).any()


@ON_TRITON
def test_fx_on_the_triton_path_matches_eager(backend):
    model = net(rescale="batch").to(backend)
    gm = torch.fx.symbolic_trace(model)
    x = image().to(backend)
    assert_same_run(run_seeded(gm, x), run_seeded(model, x))


@pytest.mark.parametrize("rescale", ["batch", "sample", "expected"])
def test_compile_fullgraph_has_no_graph_break_and_matches_eager(rescale):
    """fullgraph=True refuses graph breaks; aot_eager runs dynamo and AOTAutograd (fake tensors, the
    autograd formula) without generating code."""
    model = net(rescale=rescale)
    x = image()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_same_run(run_seeded(compiled, x), run_seeded(model, x))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_compile_with_inductor_forward_and_backward(device):
    """Inductor (C++ on the CPU, Triton on CUDA) around the op, whose CUDA backend is the Triton kernels;
    pointwise neighbours only, to keep compiling short."""
    model = nn.Sequential(nn.Tanh(), DropBlock2d(0.2, 3), nn.Sigmoid()).train()
    compiled = torch.compile(model, fullgraph=True)
    x = image().to(device)
    (y, grad), (y_eager, grad_eager) = run_seeded(compiled, x), run_seeded(model, x)
    assert torch.equal(y == 0.5, y_eager == 0.5) and (y == 0.5).any()  # sigmoid(0): the same units dropped
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(grad, grad_eager)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_export_runs_forward_and_backward(device):
    model = net().to(device)
    x = image().to(device)
    exported = torch.export.export(model, (x,))
    assert any(n.target is OP for n in exported.graph.nodes)
    assert_same_run(run_seeded(exported.module(), x), run_seeded(model, x))


def test_a_generator_cannot_be_traced():
    with pytest.raises(ValueError, match="^generator= and seed= cannot be used while torch.fx"):
        torch.fx.symbolic_trace(lambda x: drop_block2d(x, 0.2, 3, seed=0))
    with pytest.raises(ValueError, match="^generator= and seed= cannot be used while torch.fx"):
        torch.fx.symbolic_trace(DropBlock2d(0.2, 3, seed=0))


def test_the_ops_pass_torchs_op_checks():
    x = image()
    args = (x, 0.2, 3, "paper", 0.0, "batch", False, 1e-6)
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(OP, args, test_utils=checks)
    out, state, kept = OP(*args)
    assert out.shape == x.shape and state.dtype == torch.uint8 and kept.shape == (1,)
    assert int(kept) == int((out != 0).sum())
    replay = torch.ops.dropblock.drop_block2d_replay.default
    torch.library.opcheck(replay, (x, state, kept, *args[1:]), test_utils=checks)
    assert torch.equal(replay(x, state, kept, *args[1:]), out)  # the same draw again


def test_torchvision_feature_extractor_traces_a_resnet_holding_dropblock():
    """torchvision's create_feature_extractor runs torch.fx over the model (skipped where torchvision
    does not import, e.g. beside a CPU-only torch it was not built for)."""
    resnet18 = require("torchvision.models").resnet18
    create_feature_extractor = require("torchvision.models.feature_extraction").create_feature_extractor
    torch.manual_seed(0)
    model = resnet18(weights=None)
    model.layer3 = nn.Sequential(model.layer3, DropBlock2d(0.2, 3))
    model.train()
    extractor = create_feature_extractor(model, {"layer3.0": "before", "layer3.1.drop_block2d": "dropped", "fc": "out"})
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    feats = extractor(x)
    torch.manual_seed(2)
    expect = model(x)
    assert ((feats["dropped"] == 0) & (feats["before"] > 0)).any()
    torch.testing.assert_close(feats["out"], expect)
    feats["out"].sum().backward()
    assert model.conv1.weight.grad is not None
    model.eval(), extractor.eval()  # the eval graph holds the node too, and it drops nothing
    feats = extractor(x)
    assert torch.equal(feats["dropped"], feats["before"])
    torch.testing.assert_close(feats["out"], model(x))
