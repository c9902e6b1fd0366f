"""``torchvision:NAME``: torchvision's classification models, their default weights from the
torch hub cache, and preprocessing and class names from those weights' metadata.

torchvision's own loader unpickles checkpoints with ``weights_only=False``. Here the builder runs
with torchvision's module-level ``load_state_dict_from_url`` swapped, for the duration of the
call, for one that reads the cached file with ``weights_only=True`` and downloads only when asked;
the builder's own fix-ups (DenseNet's old key names, Inception's ``transform_input``) still apply.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from dropblock.errors import one_line

from .errors import ModelLoadError, UnknownModelError, WeightsError
from .preprocessing import RESAMPLE, Preprocessing, imagenet_preprocessing
from .weights import as_state_dict, build_and_fit, read_state_dict

EXTRA = "pip install 'dropblock[torchvision]'"


def import_torchvision() -> ModuleType:
    """``torchvision.models``, or a ModelLoadError naming the extra."""
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ModelLoadError(f"torchvision: models need torchvision, which is not installed: "
                             f"{EXTRA}") from None
    except Exception as exc:  # e.g. a torchvision built for another torch
        raise ModelLoadError(f"torchvision cannot be imported beside torch {torch.__version__}: "
                             f"{one_line(exc, with_type=True, limit=160)}; install the torchvision "
                             f"release made for it") from exc
    return tvm


def resolve_name(tvm: ModuleType, name: str) -> str:
    """The torchvision classification model called ``name`` (case-insensitive).

    Raises:
        UnknownModelError: no such model; close matches first.
    """
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


def fitted_to(model: nn.Module, prep: Preprocessing) -> Preprocessing:
    """``prep`` at the one input side that ``model`` takes, where it fixes one (a ViT's
    ``image_size``): built without its default weights, ViT-H/14 takes 224, while those weights'
    transforms crop 518 (the builder sets the size from the weights it is given)."""
    size = getattr(model, "image_size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size != prep.crop:
        return prep.with_overrides(size)
    return prep


def class_names_of(weights: Any) -> tuple[str, ...] | None:
    """``weights.meta["categories"]``, if any."""
    names = None if weights is None else weights.meta.get("categories")
    return tuple(names) if names else None


def _hub_loader(download: bool, spec: str):
    def load(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        file_name = str(kwargs.get("file_name") or os.path.basename(urlparse(url).path))
        cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        if cached.is_file():
            return read_state_dict(cached)
        if not download:
            raise WeightsError(f"no weights for {spec}: {file_name} is not in {cached.parent}; "
                               f"pass --download to fetch it from {url}, or --weights FILE")
        try:
            state = torch.hub.load_state_dict_from_url(
                url, map_location="cpu", progress=False, check_hash=True, file_name=file_name,
                weights_only=True)
        except Exception as exc:
            raise WeightsError(f"could not download {url} to {cached.parent}: "
                               f"{one_line(exc, with_type=True, limit=160)}; pass --weights FILE "
                               f"instead") from exc
        return as_state_dict(state, f"download {url}")
    return load


def build(tvm: ModuleType, name: str, spec: str, *, weights: str | Path | None, pretrained: bool,
          download: bool, meta: bool = False) -> tuple[nn.Module, int]:
    """torchvision model ``name`` and its number of classes: with the default weights
    (``pretrained``), the weights file ``weights`` (a file with another number of classes gets a
    model built for them), or random init (neither; on the meta device, with no data, for
    ``meta``).

    Raises:
        WeightsError: weights missing (with how to get them), unreadable or not fitting.
        ModelLoadError: the builder raised.
    """
    builder = tvm.get_model_builder(name)
    default = default_weights(tvm, name)
    classes = len(class_names_of(default) or ()) or 1000
    if weights is not None:
        state = read_state_dict(weights)
        return build_and_fit(
            lambda n: builder(weights=None, **({} if n is None else {"num_classes": n})),
            state, str(Path(weights).expanduser()), spec, classes)
    if not pretrained:
        with torch.device("meta" if meta else "cpu"):
            return _call(builder, spec, weights=None), classes
    if default is None:
        raise WeightsError(f"torchvision has no pretrained weights for {spec}; pass --weights FILE")
    import torchvision.models._api as api

    saved = api.load_state_dict_from_url
    api.load_state_dict_from_url = _hub_loader(download, spec)
    try:
        return _call(builder, spec, weights=default), classes
    finally:
        api.load_state_dict_from_url = saved


def _call(builder: Any, spec: str, **kwargs: object) -> nn.Module:
    try:
        return builder(**kwargs)
    except WeightsError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"building {spec} failed: {one_line(exc, with_type=True, limit=160)}") from exc
