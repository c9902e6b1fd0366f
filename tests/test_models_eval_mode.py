"""dropblock.models.layers.eval_mode, and every place that switches a model to eval: each module gets its
own mode back (``model.train(flag)`` would reset them all)."""

import numpy as np
import torch
from torch import nn

from dropblock.models import eval_mode, forward_many
from dropblock.models.layers import trace_model


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def mixed(training: bool) -> Net:
    """A training model with a frozen (eval) BatchNorm, or an eval model with a train-mode one."""
    net = Net().train(training)
    net.bn.train(not training)
    return net


def test_eval_mode_restores_each_module():
    """Breaks if eval_mode restored with model.train(flag): the BatchNorm would take the root's mode."""
    for training in (True, False):
        net = mixed(training)
        with eval_mode(net):
            assert not any(m.training for m in net.modules())
        assert net.training is training and net.bn.training is (not training)


def test_forward_many_and_traces_restore_each_module():
    """The running statistics of a frozen BatchNorm stay as they were (they would change on the next
    training step if its mode came back as train)."""
    x = torch.randn(1, 3, 8, 8)
    for training in (True, False):
        net = mixed(training)
        forward_many(net, x, "conv", [lambda f: f * 0])
        trace_model(net, 8)
        assert net.training is training and net.bn.training is (not training)
    net = mixed(True)
    before = net.bn.running_mean.clone()
    forward_many(net, x, "conv", [lambda f: f * 0])
    net(torch.randn(2, 3, 8, 8))  # a training step: the frozen BatchNorm must not update
    assert torch.equal(net.bn.running_mean, before)


def test_layer_cam_restores_each_module():
    from dropblock.cam import layer_cam
    from dropblock.models import build_model

    net = build_model("resnet18").train()
    net.bn1.eval()
    keep = torch.ones(1, 64, 56, 56, dtype=torch.bool)
    layer_cam(net, np.zeros((224, 224, 3), np.uint8), "stem", [(keep, 1.0)], method="gradcam")
    assert net.training and not net.bn1.training and net.layer1[0].bn1.training
