"""Building a model from each kind of spec: its module, preprocessing, class count and names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .layers import Trace, check_logits, trace_model
from .preprocessing import PREPROCESSING, Preprocessing, imagenet_preprocessing
from .registry import build_model
from .spec import ModelSpec
from .weights import fit_state_dict, load_weights, read_state_dict


@dataclass(frozen=True)
class Built:
    """A freshly built model and what its source says about it.

    Attributes:
        module: the model (CPU, or meta when built without data).
        preprocessing: from the source's config.
        classes: K outputs.
        names: class names from the source's metadata, if any (may not have K entries).
        weights: ``"default"``, a file path or ``"random init"``.
        trace: a forward pass already made to learn K (user code), else None.
    """

    module: nn.Module
    preprocessing: Preprocessing
    classes: int
    names: tuple[str, ...] | None
    weights: str
    trace: Trace | None = None


def _weights_label(weights: str | Path | None, pretrained: bool) -> str:
    if weights is not None:
        return str(Path(weights).expanduser())
    return "default" if pretrained else "random init"


def build_builtin(spec: ModelSpec, weights: str | Path | None, pretrained: bool,
                  download: bool, meta: bool) -> Built:
    """A built-in network (our own code): default weights from its package or the hub cache."""
    if weights is None and not pretrained:
        with torch.device("meta" if meta else "cpu"):
            model = build_model(spec.name)
    else:
        model = build_model(spec.name)
        load_weights(model, spec.name, weights=weights, download=download)
    return Built(model, PREPROCESSING[spec.name], 1000, None, _weights_label(weights, pretrained))


def build_torchvision(spec: ModelSpec, weights: str | Path | None, pretrained: bool,
                      download: bool, meta: bool) -> Built:
    """``torchvision:NAME``; preprocessing and class names from its DEFAULT weights' metadata."""
    from . import torchvision_models as tv

    tvm = tv.import_torchvision()
    name = tv.resolve_name(tvm, spec.name)
    text = f"torchvision:{name}"
    model, classes = tv.build(tvm, name, text, weights=weights, pretrained=pretrained,
                              download=download, meta=meta)
    default = tv.default_weights(tvm, name)
    return Built(model, tv.fitted_to(model, tv.preprocessing_of(default)), classes,
                 tv.class_names_of(default), _weights_label(weights, pretrained))


def build_timm(spec: ModelSpec, weights: str | Path | None, pretrained: bool, download: bool,
               meta: bool) -> Built:
    """``timm:NAME``; preprocessing and class names from its ``pretrained_cfg``."""
    from . import timm_models as tm

    timm = tm.import_timm()
    name = tm.resolve_name(timm, spec.name)
    model, classes = tm.build(timm, name, f"timm:{name}", weights=weights, pretrained=pretrained,
                              download=download, meta=meta)
    return Built(model, tm.preprocessing_of(model), classes, tm.class_names_of(model),
                 _weights_label(weights, pretrained))


def build_user(spec: ModelSpec, weights: str | Path | None, size: int) -> Built:
    """``module:function`` / ``file.py:function``, with the function's own weights or
    ``weights``; ImageNet preprocessing; K from one forward pass at ``size``."""
    from .user_code import build_user_model

    text = str(spec)
    model = build_user_model(spec)
    if weights is not None:
        fit_state_dict(model, read_state_dict(weights), str(Path(weights).expanduser()), text)
    trace = trace_model(model.eval(), size)
    classes = check_logits(trace.output_shape, trace.output_type, text)
    label = str(Path(weights).expanduser()) if weights is not None else "own code"
    return Built(model, imagenet_preprocessing(224), classes, None, label, trace)
