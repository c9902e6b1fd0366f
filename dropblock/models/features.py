"""Running a network with one layer's activation replaced by an edited copy.

The activation is computed once; the rest of the network (the "suffix") then runs on the
original and on each edited copy. The suffix is the same code as the model's ``forward``, so
``logits_before`` equals a plain forward pass exactly, and an edit equals what a forward hook
that returns ``edit(output)`` on :func:`~dropblock.models.registry.layer_module` would give.
Models run in eval mode (restored afterwards) under ``torch.inference_mode()``; returned
tensors are inference tensors on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .base import SteppedNet
from .names import resolve_layer
from .registry import as_stepped

Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FeatureRun:
    """One image, one layer, one edit.

    Attributes:
        layer: canonical layer name.
        logits_before: (B, 1000) logits of the unedited network.
        logits_after: (B, 1000) logits with the layer's output replaced by ``edit(feature)``.
        feature_before: (B, C, H, W) the layer's output.
        feature_after: (B, C, H, W) ``edit(feature_before)`` (a copy of it for no edit).
    """

    layer: str
    logits_before: torch.Tensor
    logits_after: torch.Tensor
    feature_before: torch.Tensor
    feature_after: torch.Tensor


@dataclass(frozen=True)
class FeatureBatchRun:
    """One image, one layer, N edits.

    Attributes:
        layer: canonical layer name.
        logits_before: (1, 1000) logits of the unedited network.
        logits_after: (N, 1000) logits, row i with the layer's output replaced by ``edits[i]``.
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


def _prepare(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[SteppedNet, str, int, torch.Tensor]:
    net = as_stepped(model)
    name = resolve_layer(net.arch, layer)
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"expected x of shape (B, 3, H, W), got {shape}")
    param = next(net.parameters())
    return net, name, net.layer_steps[name], x.to(device=param.device, dtype=param.dtype)


def _apply(edit: Edit, feature: torch.Tensor) -> torch.Tensor:
    """``edit`` on a private copy of ``feature``; checks the result's shape."""
    out = edit(feature.clone())
    if not torch.is_tensor(out) or out.shape != feature.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"edit must return a tensor of shape {tuple(feature.shape)}, got {got}")
    return out.to(device=feature.device, dtype=feature.dtype)


def forward_with_edit(model: nn.Module, x: torch.Tensor, layer: str,
                      edit: Edit | None = None) -> FeatureRun:
    """Logits and ``layer``'s activation, before and after replacing it by ``edit(feature)``.

    Args:
        model: a network from ``build_model``/``load_model``.
        x: (B, 3, 224, 224) preprocessed input (moved to the model's device).
        layer: a layer name of the model (see ``layer_table``).
        edit: maps the (B, C, H, W) activation to a same-shape tensor (it gets a copy, so
            in-place edits are fine); None gives ``after == before``.

    Raises:
        UnknownNameError: unknown layer (close matches first in ``.choices``).
        ValueError: bad ``x`` shape, or the edit returns another shape.
    """
    net, name, step, x = _prepare(model, x, layer)
    with _EvalMode(net), torch.inference_mode():
        feature = net.forward_range(x, 0, step + 1)
        logits = net.forward_range(feature, step + 1)
        if edit is None:
            return FeatureRun(name, logits, logits.clone(), feature, feature.clone())
        edited = _apply(edit, feature)
        return FeatureRun(name, logits, net.forward_range(edited, step + 1), feature, edited)


def forward_many(model: nn.Module, x: torch.Tensor, layer: str, edits: Iterable[Edit],
                 batch_size: int = 32, keep_features: bool = False) -> FeatureBatchRun:
    """Like :func:`forward_with_edit` for N edits of one image's activation, batched.

    The layer's activation is computed once; the edited copies go through the rest of the
    network ``batch_size`` at a time (row i of ``logits_after`` is ``edits[i]``). Batching can
    change logits in the last float bits versus one-at-a-time runs.

    Args:
        x: (1, 3, 224, 224) preprocessed input.
        edits: callables as in :func:`forward_with_edit`; at least one.
        batch_size: edited maps per suffix pass (bounds memory).
        keep_features: also return the (N, C, H, W) edited maps.

    Raises:
        UnknownNameError, ValueError: as :func:`forward_with_edit`; also for B != 1, no
            edits, or batch_size < 1.
    """
    edits = list(edits)
    if not edits:
        raise ValueError("forward_many needs at least one edit")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net, name, step, x = _prepare(model, x, layer)
    if x.shape[0] != 1:
        raise ValueError(f"forward_many takes one image, got a batch of {x.shape[0]}")
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
        name, logits, torch.cat(logits_after), feature, torch.cat(kept) if keep_features else None
    )
