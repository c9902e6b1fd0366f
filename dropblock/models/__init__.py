"""Image classifiers: the built-in ImageNet CNNs (EfficientNet-Lite0, ResNet-18/50) in the
project's own torch code, any torchvision or timm model, or the user's own model code; their
weights, preprocessing, class names, layer tables and feature-map editing.

Names, specs, errors and class names load without torch; the rest loads lazily on first use, so
``import dropblock.models`` stays cheap (e.g. for a CLI's ``--help``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (LayerError, ModelLoadError, ModelSpecError, UnknownModelError,
                     UnknownNameError, WeightsError)
from .names import DEFAULT_MODEL, MODEL_NAMES, class_names, layer_names, resolve_layer, resolve_model
from .spec import ModelSpec, parse_spec

_LAZY = {
    "LoadedModel": "loaded",
    "as_loaded": "loaded",
    "load_classifier": "loaded",
    "load_structure": "loaded",
    "read_class_names": "loaded",
    "Preprocessing": "preprocessing",
    "filter_layers": "layers",
    "LayerInfo": "layers",
    "build_model": "sources",
    "load_model": "loaded",
    "layer_table": "loaded",
    "layer_module": "layers",
    "preprocess": "preprocessing",
    "FeatureBatchRun": "edit",
    "forward_many": "edit",
    "eval_mode": "modes",
    "EfficientNetLite0": "efficientnet_lite",
    "ResNet": "resnet",
    "resnet18": "resnet",
    "resnet50": "resnet",
}

__all__ = sorted(
    [*_LAZY, "class_names", "UnknownNameError", "WeightsError", "DEFAULT_MODEL", "MODEL_NAMES",
     "layer_names", "resolve_layer", "resolve_model", "LayerError", "ModelLoadError",
     "ModelSpecError", "UnknownModelError", "ModelSpec", "parse_spec"]
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dropblock.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
