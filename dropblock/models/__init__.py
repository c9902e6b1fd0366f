"""Image classifiers: the built-in ImageNet CNNs (EfficientNet-Lite0, ResNet-18/50) in the project's own
torch code, any torchvision or timm model, or the user's own model code; their weights, preprocessing,
class names, layer tables and feature-map editing.

Names, specs and errors load without torch; the rest loads on first use, so ``import dropblock.models``
stays cheap (e.g. for a CLI's ``--help``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (LayerError, ModelLoadError, ModelSpecError, UnknownModelError, UnknownNameError, WeightsError)
from .names import (DEFAULT_MODEL, MODEL_NAMES, ModelSpec, class_names, layer_names, parse_spec, resolve_layer,
                    resolve_model)

_MODULES = {  # module -> the names it gives, imported on first use
    "loaded": ("LoadedModel", "as_loaded", "load_classifier", "load_structure", "read_class_names",
               "load_model", "layer_table"),
    "layers": ("filter_layers", "LayerInfo", "layer_module", "eval_mode"),
    "preprocessing": ("Preprocessing", "preprocess"),
    "sources": ("build_model",),
    "edit": ("FeatureBatchRun", "forward_many"),
    "nets": ("EfficientNetLite0", "ResNet", "resnet18", "resnet50"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

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
