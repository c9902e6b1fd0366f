"""``torchvision:NAME``: torchvision's classification models, their default weights from the torch
hub cache, and preprocessing and class names from those weights' metadata.

torchvision's own loader unpickles checkpoints with ``weights_only=False``, so the builder runs with
its ``load_state_dict_from_url`` swapped for :func:`~.weights.hub_state_dict`, which downloads only
when asked; the builder's own fix-ups (DenseNet's old key names) still apply.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from .errors import UnknownModelError, WeightsError
from .names import ModelSpec
from .preprocessing import RESAMPLE, Preprocessing, imagenet_preprocessing
from .sources import Built, create, fitted, import_extra, random_init, weights_label
from .weights import hub_state_dict


def resolve_name(tvm: ModuleType, name: str) -> str:
    """The torchvision classification model called ``name`` (case-insensitive)."""
    names = tvm.list_models(module=tvm)
    if name in names:
        return name
    lower = {n.lower(): n for n in names}
    if name.lower() in lower:
        return lower[name.lower()]
    raise UnknownModelError("torchvision model", name, names,
                            hint=f"{len(names)} models in all: torchvision.models.list_models()")


def default_weights(tvm: ModuleType, name: str) -> Any:
    """The builder's DEFAULT weights enum member, or None."""
    try:
        return tvm.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def preprocessing_of(weights: Any) -> Preprocessing:
    """Resize, crop, interpolation, mean and std of ``weights.transforms()`` (ImageNet defaults
    at 224 without weights)."""
    if weights is None:
        return imagenet_preprocessing(224)
    t = weights.transforms()
    crop = int(t.crop_size[0])
    resize = int(t.resize_size[0]) if t.resize_size else crop
    resample = RESAMPLE.get(str(t.interpolation.value), RESAMPLE["bilinear"])
    return Preprocessing(resize, crop, resample, 255.0, tuple(t.mean), tuple(t.std))


def fitted_to(model: torch.nn.Module, prep: Preprocessing) -> Preprocessing:
    """``prep`` at the one input side that ``model`` takes, where it fixes one (a ViT's
    ``image_size``): built without its default weights, ViT-H/14 takes 224, where those weights'
    transforms crop 518."""
    size = getattr(model, "image_size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size != prep.crop:
        return prep.with_overrides(size)
    return prep


def class_names_of(weights: Any) -> tuple[str, ...] | None:
    """``weights.meta["categories"]``, if any."""
    names = None if weights is None else weights.meta.get("categories")
    return tuple(names) if names else None


def build(spec: ModelSpec, weights: str | Path | None, pretrained: bool, download: bool,
          meta: bool) -> Built:
    """torchvision model ``spec.name`` with the default weights (``pretrained``), the weights
    file ``weights`` (a file with another number of classes gets a model built for them), or
    random init (neither; on the meta device, with no data, for ``meta``)."""
    tvm = import_extra("torchvision.models")
    name = resolve_name(tvm, spec.name)
    text = f"torchvision:{name}"
    default = default_weights(tvm, name)
    names = class_names_of(default)
    classes = len(names or ()) or 1000
    builder = partial(create, tvm.get_model_builder(name), text)
    if weights is not None:
        model, classes = fitted(partial(builder, weights=None), text, weights, classes)
    elif not pretrained:
        model = random_init(partial(builder, weights=None), meta)
    elif default is None:
        raise WeightsError(f"torchvision has no pretrained weights for {text}; pass --weights FILE")
    else:
        model = _pretrained(builder, default, text, download)
    return Built(model, fitted_to(model, preprocessing_of(default)), classes, names,
                 weights_label(weights, pretrained))


def _pretrained(builder: partial, default: Any, spec: str, download: bool) -> torch.nn.Module:
    """The builder with its default weights, read by :func:`~.weights.hub_state_dict`."""
    import torchvision.models._api as api

    def load(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        return hub_state_dict(url, spec, download, kwargs.get("file_name"))[0]

    saved, api.load_state_dict_from_url = api.load_state_dict_from_url, load
    try:
        return builder(weights=default)
    finally:
        api.load_state_dict_from_url = saved
