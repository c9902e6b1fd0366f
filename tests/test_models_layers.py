"""dropblock.models.layers and .trace: layer tables of any model from one recorded forward pass."""

import pytest
import torch
from torch import nn

from dropblock.models.errors import ModelLoadError
from dropblock.models.layers import LayerInfo, check_logits, filter_layers, trace_model
from dropblock.models.trace import CallRecorder


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


def test_recorder_keeps_only_the_outermost_maps():
    net = Net()
    with CallRecorder(net, keep_outputs=True) as rec, torch.no_grad():
        net(torch.zeros(1, 3, 16, 16))
    kept = [c.name for c in rec.calls if c.output is not None]
    assert kept == ["", "body", "act", "act", "pool", "fc"]  # body.0 and body.1 dropped when
    assert rec.calls[1].output.shape == (1, 4, 8, 8)          # body returned its map
    assert [c.name for c in rec.calls[0].children] == ["body", "act", "act", "pool", "fc"]
    assert all(not h for m in net.modules() for h in (m._forward_hooks, m._forward_pre_hooks))
