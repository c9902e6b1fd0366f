"""dropblock.models.layers: layer tables of any model from one forward pass recorded with hooks."""

import pytest
import torch
from torch import nn

from dropblock.models.errors import ModelLoadError
from dropblock.models.layers import LayerInfo, check_logits, filter_layers, record_calls, trace_model


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU())
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.act(self.act(self.body(x)))
        return self.fc(self.pool(x).flatten(1))


def test_trace_lists_maps_in_call_order():
    trace = trace_model(Net(), 16)
    assert [r.name for r in trace.runs] == ["body", "body.0", "body.1", "act", "pool", "fc"]
    assert trace.output_shape == (1, 3)
    assert trace.layers() == (
        LayerInfo("body", "Sequential", (4, 8, 8), True),
        LayerInfo("body.0", "Conv2d", (4, 8, 8), True),
        LayerInfo("body.1", "ReLU", (4, 8, 8), True),
        LayerInfo("act", "ReLU", (4, 8, 8), True, calls=2),
        LayerInfo("pool", "AdaptiveAvgPool2d", (4, 1, 1), False),
    )
    assert trace.near("fc") == ["body.1", "act", "pool"]
    assert trace.near("body.1", once=True) == ["body", "body.0", "pool"]


def test_trace_restores_mode_and_reports_failures():
    net = Net().train()
    trace_model(net, 16)
    assert net.training
    with pytest.raises(ModelLoadError, match="a forward pass of a 1x3x1x1 image failed"):
        trace_model(nn.Sequential(nn.Conv2d(3, 4, 3)), 1)


def test_filter_globs():
    table = trace_model(Net(), 16).layers()
    assert [li.name for li in filter_layers(table, "body.*")] == ["body.0", "body.1"]
    assert [li.name for li in filter_layers(table, ["pool", "a*"])] == ["act", "pool"]
    assert filter_layers(table, None) == list(table)


def test_check_logits():
    assert check_logits((1, 10), "Tensor", "m") == 10
    for shape, part in (((2, 10), "shape (2, 10)"), ((1, 10, 1), "shape (1, 10, 1)")):
        with pytest.raises(ModelLoadError, match=part.replace("(", r"\(").replace(")", r"\)")):
            check_logits(shape, "Tensor", "m")
    with pytest.raises(ModelLoadError, match="m returns a dict, expected"):
        check_logits(None, "dict", "m")


class Catches(nn.Module):
    """Calls a module that raises, and carries on."""

    def __init__(self):
        super().__init__()
        self.bad, self.good = nn.Linear(2, 2), nn.Identity()

    def forward(self, x):
        try:
            self.bad(x)  # wrong shape
        except RuntimeError:
            pass
        return self.good(x)


def test_record_calls_order_counts_aliases_and_hooks_removed():
    """Runs come in the order their first calls started (a parent before its children), finish
    order and aliases (a Sequential returns its last child's map) are recorded, and no hook is left.
    Breaks if the recorder listed runs by finish order, lost a count, or left hooks on the model."""
    net = Net()
    with torch.no_grad():
        trace = record_calls(net, lambda: net(torch.zeros(1, 3, 16, 16)))
    runs = {r.name: r for r in trace.runs}
    assert [r.name for r in trace.runs] == ["body", "body.0", "body.1", "act", "pool", "fc"]
    assert runs["act"].calls == 2 and runs["body.0"].calls == 1
    assert runs["body.0"].finished < runs["body.1"].finished < runs["body"].finished < runs["act"].finished
    assert runs["body"].same_as == "body.1" and runs["body.1"].same_as is None
    assert runs["act"].same_as is None
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    model = Catches()  # a call that raised never returned: not a run
    trace = record_calls(model, lambda: model(torch.zeros(1, 3)))
    assert [r.name for r in trace.runs] == ["good"]
    with pytest.raises(RuntimeError):
        record_calls(net, lambda: net(torch.zeros(1, 2, 16, 16)))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
