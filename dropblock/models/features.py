"""Running a network with one layer's activation replaced by an edited copy.

Two ways, same results (a test checks that they agree):

- the built-in networks at their short layer names (``blocks.5``, ``layer3``) are split into
  steps: the activation is computed once and the rest of the network (the "suffix") runs on the
  original and on each edited copy. Under ``torch.inference_mode()``.
- any module of any model (``layer3.1.conv2`` of a torchvision ResNet, ``stages.2`` of a timm
  model): through forward hooks, reusing the unedited prefix where it can
  (:mod:`dropblock.models.hooks`); on a built-in network, the steps before the first one that
  calls the module run once. The clean pass under ``torch.no_grad()`` (it reads version
  counters), the edits and the reruns under ``torch.inference_mode()``.

``logits_before`` equals a plain forward pass, and an edit equals what a forward hook that returns
``edit(output)`` on :func:`~dropblock.models.registry.layer_module` would give. Models run in eval
mode (restored afterwards); returned tensors are on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .base import SteppedNet
from .hooks import clean_pass, edited_logits
from .layers import layer_path, trace_model, unknown_layer

Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FeatureBatchRun:
    """One image, one layer, N edits.

    Attributes:
        layer: canonical layer name.
        logits_before: (1, K) logits of the unedited network (K classes).
        logits_after: (N, K) logits, row i with the layer's output replaced by ``edits[i]``.
        feature_before: (1, C, H, W) the layer's output.
        features_after: (N, C, H, W) the edited maps, or None unless ``keep_features``.
    """

    layer: str
    logits_before: torch.Tensor
    logits_after: torch.Tensor
    feature_before: torch.Tensor
    features_after: torch.Tensor | None


class _EvalMode:
    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


def _apply(edit: Edit, feature: torch.Tensor) -> torch.Tensor:
    """``edit`` on a private copy of ``feature``; checks the result's shape."""
    out = edit(feature.clone())
    if not torch.is_tensor(out) or out.shape != feature.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"edit must return a tensor of shape {tuple(feature.shape)}, got {got}")
    return out.to(device=feature.device, dtype=feature.dtype)


VIA: tuple[str, ...] = ("auto", "steps", "hooks")


def forward_many(model: nn.Module, x: torch.Tensor, layer: str, edits: Iterable[Edit],
                 batch_size: int = 32, keep_features: bool = False, *,
                 via: str = "auto") -> FeatureBatchRun:
    """N edits of one image's activation at ``layer``, batched (row i of ``logits_after`` is
    ``edits[i]``). Batching can change logits in the last float bits versus one-at-a-time runs.

    Args:
        model: any classifier returning (1, K) logits for one image, or a
            :class:`~dropblock.models.loaded.LoadedModel`.
        x: (1, 3, H, W) preprocessed input (moved to the model's device and dtype).
        layer: a ``named_modules`` name whose output is one (1, C, h, w) map, or a built-in
            network's short layer name.
        edits: callables mapping the (1, C, h, w) map to a same-shape tensor (each gets its own
            copy, so in-place edits are fine); at least one.
        batch_size: edited maps per pass (bounds memory).
        keep_features: also return the (N, C, h, w) edited maps.
        via: ``"auto"``: steps for a built-in network's short layer names, hooks otherwise;
            ``"steps"`` or ``"hooks"`` to choose.

    Raises:
        UnknownNameError: unknown layer (close matches first in ``.choices``).
        LayerError: the layer's output is not one (1, C, h, w) map.
        ModelLoadError: the model fails, or does not return (1, K) logits.
        ValueError: bad ``x``, batch_size, via, no edits, or an edit returning another shape.
    """
    edits = list(edits)
    if not edits:
        raise ValueError("forward_many needs at least one edit")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if via not in VIA:
        raise ValueError(f"via must be one of {', '.join(VIA)}; got {via!r}")
    net = getattr(model, "module", model)
    name = str(getattr(model, "spec", "") or getattr(net, "arch", "") or type(net).__name__)
    x = _check_image(net, x)
    found = layer_path(net, layer)
    if found is None:
        raise unknown_layer(layer, trace_model(net, x.shape[-1]), name, net)
    display, path = found
    stepped = isinstance(net, SteppedNet) and display in net.layer_steps
    if via == "steps" and not stepped:
        raise ValueError(f"via='steps' needs a built-in network and one of its short layer "
                         f"names, got {layer!r} of {name}")
    if stepped and via != "hooks":
        return _many_by_steps(net, x, display, edits, batch_size, keep_features)
    return _many_by_hooks(net, x, (display, path), edits, batch_size, keep_features, name)


def _check_image(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"expected x of shape (B, 3, H, W), got {shape}")
    if x.shape[0] != 1:
        raise ValueError(f"forward_many takes one image, got a batch of {x.shape[0]}")
    param = next(net.parameters(), None)
    return x if param is None else x.to(device=param.device, dtype=param.dtype)


def _many_by_steps(net: SteppedNet, x: torch.Tensor, layer: str, edits: list[Edit],
                   batch_size: int, keep_features: bool) -> FeatureBatchRun:
    step = net.layer_steps[layer]
    logits_after, kept = [], []
    with _EvalMode(net), torch.inference_mode():
        feature = net.forward_range(x, 0, step + 1)
        logits = net.forward_range(feature, step + 1)
        for start in range(0, len(edits), batch_size):
            chunk = torch.cat([_apply(e, feature) for e in edits[start:start + batch_size]])
            logits_after.append(net.forward_range(chunk, step + 1))
            if keep_features:
                kept.append(chunk)
    return FeatureBatchRun(
        layer, logits, torch.cat(logits_after), feature, torch.cat(kept) if keep_features else None
    )


def _many_by_hooks(net: nn.Module, x: torch.Tensor, layer: tuple[str, str], edits: list[Edit],
                   batch_size: int, keep_features: bool, name: str) -> FeatureBatchRun:
    display, path = layer
    logits_after, kept = [], []
    with _EvalMode(net):
        with torch.no_grad():  # the clean pass needs version counters: no inference mode
            clean = clean_pass(net, x, path, name)
        with torch.inference_mode():
            for start in range(0, len(edits), batch_size):
                chunk = torch.cat([_apply(e, clean.feature) for e in edits[start:start + batch_size]])
                logits_after.append(edited_logits(path, chunk, clean, name))
                if keep_features:
                    kept.append(chunk)
    return FeatureBatchRun(display, clean.logits, torch.cat(logits_after), clean.feature,
                           torch.cat(kept) if keep_features else None)
