"""Building and loading the registered models, and their table of pickable layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from dropblock.errors import UsageError, one_line

from .base import BuiltinNet
from .efficientnet_lite import EfficientNetLite0
from .errors import UnknownNameError
from .layers import LayerInfo, filter_layers, layer_path, trace_model
from .names import layer_names, resolve_layer, resolve_model
from .resnet import resnet18, resnet50
from .weights import load_weights

INPUT_SIZE = 224

_BUILDERS: dict[str, Callable[..., BuiltinNet]] = {
    "efficientnet-lite0": EfficientNetLite0,
    "resnet18": resnet18,
    "resnet50": resnet50,
}


def build_model(name: str, num_classes: int = 1000) -> BuiltinNet:
    """A randomly initialised ``name`` network in eval mode (uses torch's global RNG).

    Raises:
        UnknownNameError: unknown model name.
    """
    return _BUILDERS[resolve_model(name)](num_classes=num_classes).eval()


def load_model(
    name: str, weights: str | Path | None = None, download: bool = False,
    device: str | torch.device = "cpu",
) -> BuiltinNet:
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
    device = check_device(device)
    model = build_model(canonical)
    load_weights(model, canonical, weights=weights, download=download)
    return model.to(device).eval()


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that works here.

    Raises:
        ValueError: it cannot be used (e.g. ``"cuda"`` without a GPU).
    """
    try:
        device = torch.device(device)
        torch.empty(0, device=device)  # fails early for e.g. "cuda" without a GPU
    except (RuntimeError, AssertionError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot use device {str(device)!r}: {one_line(exc)}") from exc
    return device


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule whose forward output is ``layer``'s activation (to hook it): a built-in
    network's short name (``blocks.5``) or any ``named_modules`` name of any model.

    Raises:
        UnknownNameError: unknown layer.
    """
    model = getattr(model, "module", model)  # a LoadedModel
    found = layer_path(model, layer)
    if found is None:
        if isinstance(model, BuiltinNet):
            resolve_layer(model.arch, layer)  # raises with the short names listed
        raise UnknownNameError("layer", str(layer), [n for n, _ in model.named_modules() if n])
    return model.get_submodule(found[1])


@lru_cache(maxsize=None)
def _layer_table(name: str) -> tuple[LayerInfo, ...]:
    with torch.device("meta"):
        model = build_model(name)
    by_path = {li.name: li for li in trace_model(model, INPUT_SIZE).layers()}
    return tuple(replace(by_path[path], name=layer) for layer, path in model.layer_paths.items())


def layer_table(model: object, filter: str | Sequence[str] | None = None) -> list[LayerInfo]:
    """The pickable layers of a model, input to output, with (C, H, W) output shapes.

    Args:
        model: a built-in model name: its short-named layers (``stem``, ``blocks.0`` ...) at a
            1x3x224x224 input, measured once (then cached) on the meta device, no weights needed. Or a :class:`~dropblock.models.loaded.LoadedModel`: every module
            with a 4-D output at its input size. Or any ``nn.Module``: the same at 224.
        filter: glob(s) on the names (see :func:`~dropblock.models.layers.filter_layers`).

    Raises:
        UnknownNameError: unknown model name.
    """
    if isinstance(model, str):
        table = _layer_table(resolve_model(model))
    elif isinstance(getattr(model, "layers", None), tuple):
        table = model.layers
    else:
        table = trace_model(model, INPUT_SIZE).layers()
    return filter_layers(table, filter)


__all__ = ["LayerInfo", "build_model", "load_model", "layer_table", "layer_module"]
