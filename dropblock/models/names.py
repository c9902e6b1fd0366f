"""Model and layer names, and the lookups that check them. Needs no torch.

User-facing layer names (each names an activation a user can regularize):

- ``efficientnet-lite0``: ``stem`` (after conv+BN+ReLU6, 32x112x112), ``blocks.0`` ...
  ``blocks.15`` (MBConv block outputs), ``head`` (after 1x1 conv+BN+ReLU6, 1280x7x7).
- ``resnet18`` / ``resnet50``: ``stem`` (after conv+BN+ReLU+max-pool, 64x56x56),
  ``layer1`` ... ``layer4`` (stage outputs) and each residual block ``layer3.1`` etc.
"""

from __future__ import annotations

import re

from .errors import UnknownNameError

MODEL_NAMES: tuple[str, ...] = ("efficientnet-lite0", "resnet18", "resnet50")
DEFAULT_MODEL: str = "efficientnet-lite0"

#: Residual blocks per stage (layer1..layer4) of the torchvision ResNets.
RESNET_DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet50": (3, 4, 6, 3),
}
#: EfficientNet-Lite0's MBConv stages: (repeats, kernel, stride, expand ratio, in channels, out
#: channels). It builds the network (:mod:`~dropblock.models.efficientnet_lite`) and names its blocks.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _resnet_paths(depths: tuple[int, ...]) -> dict[str, str]:
    paths = {"stem": "maxpool"}
    for stage, depth in enumerate(depths, start=1):
        paths[f"layer{stage}"] = f"layer{stage}"
        paths.update({f"layer{stage}.{j}": f"layer{stage}.{j}" for j in range(depth)})
    return paths


#: Each built-in's short layer names, input to output, each mapped to the ``named_modules`` name of
#: the submodule whose output is that layer's activation (what a forward hook goes on).
LAYER_PATHS: dict[str, dict[str, str]] = {
    "efficientnet-lite0": {
        "stem": "_stem_act",
        **{f"blocks.{i}": f"_blocks.{i}" for i in range(sum(stage[0] for stage in LITE0_STAGES))},
        "head": "_head_act",
    },
    **{name: _resnet_paths(d) for name, d in RESNET_DEPTHS.items()},
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_model(name: str) -> str:
    """The canonical model name for ``name`` (case, ``-``/``_`` ignored: ``ResNet_50`` ok).

    Raises:
        UnknownNameError: no such model; ``.choices`` lists the valid names, closest first.
    """
    key = _squash(str(name))
    for canonical in MODEL_NAMES:
        if _squash(canonical) == key:
            return canonical
    raise UnknownNameError("model", str(name), MODEL_NAMES)


def layer_names(model_name: str) -> tuple[str, ...]:
    """The pickable layer names of a model, input to output."""
    return tuple(LAYER_PATHS[resolve_model(model_name)])


def resolve_layer(model_name: str, layer: str) -> str:
    """The canonical layer name for ``layer`` of ``model_name``.

    Case and surrounding blanks are ignored; EfficientNet's module names ``_blocks.i``
    are accepted for ``blocks.i``.

    Raises:
        UnknownNameError: unknown model or layer; ``.choices`` lists the valid layer
            names, closest matches first.
    """
    model = resolve_model(model_name)
    valid = tuple(LAYER_PATHS[model])
    key = str(layer).strip().lower()
    if model == "efficientnet-lite0" and key.startswith("_blocks."):
        key = key[1:]
    if key in valid:
        return key
    raise UnknownNameError("layer", str(layer), valid, context=model)
