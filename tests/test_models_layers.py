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


def test_recorder_logs_nesting_and_restores_forwards():
    net = Net()
    net.act.forward = net.act.forward  # an instance forward of the user's own stays in place
    own = net.act.__dict__["forward"]
    ended = []
    with CallRecorder(net, on_end=lambda call, out: ended.append(call.name)) as rec, torch.no_grad():
        net(torch.zeros(1, 3, 16, 16))
    assert [c.name for c in rec.calls[0].children] == ["body", "act", "act", "pool", "fc"]
    assert [c.name for c in rec.calls[1].children] == ["body.0", "body.1"]
    assert rec.calls[1].shape == (1, 4, 8, 8) and rec.counts["act"] == 2
    assert ended[-1] == "" and not rec.stack
    assert net.act.__dict__["forward"] is own
    assert all("forward" not in m.__dict__ for m in net.modules() if m is not net.act)
    net.act2 = net.act  # one module under two names, as named_modules(remove_duplicate=False) sees it
    modules = dict(net.named_modules(remove_duplicate=False))
    with CallRecorder(net, modules) as rec, torch.no_grad():
        net(torch.zeros(1, 3, 16, 16))
    assert rec.counts["act"] == 2 and "act2" not in rec.counts
    assert net.act.__dict__["forward"] is own
    model = Catches()
    with CallRecorder(model) as rec:
        model(torch.zeros(1, 3))
    assert [c.name for c in rec.calls] == ["", "bad", "good"]
    assert [c.name for c in rec.calls[0].children] == ["bad", "good"]
    assert not rec.calls[1].done and rec.calls[2].done and not rec.stack
