"""Building and loading the registered models, and their table of pickable layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .base import SteppedNet
from .efficientnet_lite import EfficientNetLite0
from .names import layer_names, resolve_layer, resolve_model
from .resnet import resnet18, resnet50
from .weights import load_weights

INPUT_SIZE = 224

_BUILDERS: dict[str, Callable[[], SteppedNet]] = {
    "efficientnet-lite0": EfficientNetLite0,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


@dataclass(frozen=True)
class LayerInfo:
    """A layer a user can pick.

    Attributes:
        name: user-facing name, e.g. ``"blocks.5"`` or ``"layer3.1"``.
        type: class name of the module producing it, e.g. ``"MBConvBlock"``, ``"ReLU6"``.
        shape: (C, H, W) of its output for a 1x3x224x224 input.
        dropblock_ok: the map is larger than 1x1, so spatial blocks make sense.
    """

    name: str
    type: str
    shape: tuple[int, int, int]
    dropblock_ok: bool


def build_model(name: str) -> SteppedNet:
    """A randomly initialised ``name`` network in eval mode (uses torch's global RNG).

    Raises:
        UnknownNameError: unknown model name.
    """
    return _BUILDERS[resolve_model(name)]().eval()


def load_model(
    name: str, weights: str | Path | None = None, download: bool = False,
    device: str | torch.device = "cpu",
) -> SteppedNet:
    """A pretrained ``name`` network in eval mode on ``device``.

    Args:
        name: a model name (see ``MODEL_NAMES``).
        weights: a state-dict file to use instead of the default weights.
        download: for ResNets not in the torch hub cache, fetch torchvision's checkpoint.
        device: torch device for the model.

    Raises:
        UnknownNameError: unknown model name.
        WeightsError: weights missing, unreadable, or not fitting (one-line message).
        ValueError: the device cannot be used.
    """
    canonical = resolve_model(name)
    try:
        device = torch.device(device)
        torch.empty(0, device=device)  # fails early for e.g. "cuda" without a GPU
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"cannot use device {str(device)!r}: {first}") from exc
    model = build_model(canonical)
    load_weights(model, canonical, weights=weights, download=download)
    return model.to(device).eval()


def as_stepped(model: nn.Module) -> SteppedNet:
    """``model`` itself, checked to be one of this package's networks."""
    if not isinstance(model, SteppedNet):
        raise TypeError(
            f"expected a model from dropblock.models.build_model/load_model, got {type(model).__name__}"
        )
    return model


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule whose forward output is ``layer``'s activation (to hook it).

    Raises:
        UnknownNameError: unknown layer.
    """
    net = as_stepped(model)
    return net.layer_module(resolve_layer(net.arch, layer))


@lru_cache(maxsize=None)
def _layer_table(name: str) -> tuple[LayerInfo, ...]:
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream alone
        torch.manual_seed(0)
        model = build_model(name)
        x = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
    outputs: dict[str, tuple[str, tuple[int, ...]]] = {}
    handles = []
    for layer in model.layer_names:
        module = model.layer_module(layer)

        def hook(mod: nn.Module, args: object, out: torch.Tensor, layer: str = layer) -> None:
            outputs[layer] = (type(mod).__name__, tuple(out.shape))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    table = []
    for layer in layer_names(name):
        kind, shape = outputs[layer]
        c, h, w = shape[1:]
        table.append(LayerInfo(layer, kind, (c, h, w), h * w > 1))
    return tuple(table)


def layer_table(name: str) -> list[LayerInfo]:
    """The pickable layers of model ``name``, input to output, with (C, H, W) output shapes
    for a 1x3x224x224 input, measured once (then cached) by a forward pass with hooks on a
    randomly initialised model; needs no weights.

    Raises:
        UnknownNameError: unknown model name.
    """
    return list(_layer_table(resolve_model(name)))


__all__ = ["LayerInfo", "build_model", "load_model", "layer_table", "layer_module", "as_stepped"]
