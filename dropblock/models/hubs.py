"""``torchvision:NAME`` and ``timm:NAME``: the models of the two hub libraries, built by name, with
their default weights from the local caches, and preprocessing and class names from those weights'
metadata (torchvision's weights enums, timm's ``pretrained_cfg``). Nothing downloads but with
``download=True``.

torchvision's own loader unpickles checkpoints with ``weights_only=False``, so its builders run with
``load_state_dict_from_url`` swapped for :func:`~.weights.hub_state_dict`; cached timm weights go to
timm as a local file (``pretrained_cfg_overlay``). Either way the library's own fix-ups (DenseNet's
old key names, timm's checkpoint filters and class-count adaptation) still apply.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .errors import ModelLoadError, UnknownModelError, WeightsError, why
from .names import ModelSpec
from .preprocessing import IMAGENET, MODES, RESAMPLE, Preprocessing
from .sources import Built, random_init
from .weights import build_and_fit, hub_cached, hub_state_dict, read_state_dict

HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin", "open_clip_model.safetensors")


def import_extra(module: str) -> ModuleType:
    """``module`` of an optional extra (``torchvision.models``, ``timm``), or a ModelLoadError
    naming the extra to install."""
    package = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelLoadError(f"{package}: models need {package}, which is not installed: "
                             f"pip install 'dropblock[{package}]'") from None
    except Exception as exc:  # e.g. a release built for another torch
        raise ModelLoadError(f"{package} cannot be imported beside torch {torch.__version__}: "
                             f"{why(exc)}; install the {package} release made for it") from exc


def _model(plain: Callable[..., nn.Module], spec: str, weights: str | Path | None, pretrained: bool,
           meta: bool, classes: int, default: Callable[[], nn.Module]) -> tuple[nn.Module, int]:
    """The model and its class count: ``plain()`` (no weights loaded) fitted with the state-dict file
    ``weights`` (a file whose output layer has other rows than ``classes`` gets
    ``plain(num_classes=rows)``), else ``default()`` (``pretrained``), else ``plain()`` at random
    init (on the meta device, with no data, for ``meta``). Whatever building raises but a
    WeightsError is a ModelLoadError."""
    try:
        if weights is not None:
            return build_and_fit(lambda n: plain(**({} if n is None else {"num_classes": n})),
                                 read_state_dict(weights), str(Path(weights).expanduser()), spec, classes)
        return (default() if pretrained else random_init(plain, meta)), classes
    except WeightsError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"building {spec} failed: {why(exc)}") from exc


def build_torchvision(spec: ModelSpec, weights: str | Path | None, pretrained: bool, download: bool,
                      meta: bool) -> Built:
    """torchvision model ``spec.name`` as :func:`_model` builds it, with the preprocessing and class
    names of its DEFAULT weights."""
    tvm = import_extra("torchvision.models")
    name = torchvision_name(tvm, spec.name)
    text = f"torchvision:{name}"
    try:
        default = tvm.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        default = None
    names = tuple(default.meta.get("categories") or ()) if default is not None else ()
    plain = partial(tvm.get_model_builder(name), weights=None)
    model, classes = _model(plain, text, weights, pretrained, meta, len(names) or 1000,
                            partial(_torchvision_pretrained, plain, default, text, download))
    return Built(model, torchvision_preprocessing(default, model), classes, names or None)


def torchvision_name(tvm: ModuleType, name: str) -> str:
    """The torchvision classification model called ``name`` (case-insensitive)."""
    names = tvm.list_models(module=tvm)
    found = name if name in names else {n.lower(): n for n in names}.get(name.lower())
    if found is None:
        raise UnknownModelError("torchvision model", name, names,
                                hint=f"{len(names)} models in all: torchvision.models.list_models()")
    return found


def torchvision_preprocessing(weights: Any, model: nn.Module) -> Preprocessing:
    """Resize, crop, interpolation, mean and std of ``weights.transforms()`` (ImageNet's without
    weights), at the one input side that ``model`` takes where it fixes one (a ViT's ``image_size``:
    built without its default weights, ViT-H/14 takes 224, where those weights' transforms crop 518)."""
    prep = IMAGENET
    if weights is not None:
        t = weights.transforms()
        crop = int(t.crop_size[0])
        resize = int(t.resize_size[0]) if t.resize_size else crop
        resample = RESAMPLE.get(str(t.interpolation.value), RESAMPLE["bilinear"])
        prep = Preprocessing(resize, crop, resample, 255.0, tuple(t.mean), tuple(t.std))
    size = getattr(model, "image_size", None)
    if isinstance(size, int) and not isinstance(size, bool) and size != prep.crop:
        return prep.with_overrides(size)
    return prep


def _torchvision_pretrained(builder: partial, default: Any, spec: str, download: bool) -> nn.Module:
    """The builder with its default weights, read by :func:`~.weights.hub_state_dict`."""
    import torchvision.models._api as api

    if default is None:
        raise WeightsError(f"torchvision has no pretrained weights for {spec}; pass --weights FILE")

    def load(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        return hub_state_dict(url, spec, download, kwargs.get("file_name"))[0]

    saved, api.load_state_dict_from_url = api.load_state_dict_from_url, load
    try:
        return builder(weights=default)
    finally:
        api.load_state_dict_from_url = saved


def build_timm(spec: ModelSpec, weights: str | Path | None, pretrained: bool, download: bool, meta: bool) -> Built:
    """timm model ``spec.name`` as :func:`_model` builds it, with the preprocessing and class names
    of its ``pretrained_cfg``."""
    timm = import_extra("timm")
    name = timm_name(timm, spec.name)
    text = f"timm:{name}"
    cfg = timm.models.get_pretrained_cfg(name)
    classes = getattr(cfg, "num_classes", None)  # 0: a headless model (features, no classifier)
    plain = partial(timm.create_model, name)
    model, classes = _model(plain, text, weights, pretrained, meta, 1000 if classes is None else int(classes),
                            partial(_timm_pretrained, timm, plain, cfg, name, download))
    return Built(model, timm_preprocessing(model), classes, timm_class_names(model))


def timm_name(timm: ModuleType, name: str) -> str:
    """``name`` checked: a timm architecture, and a pretrained tag of it if one is given."""
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        names = timm.list_models()
        raise UnknownModelError("timm model", name, names, hint=f"{len(names)} models in all: timm.list_models()")
    if tag:
        tagged = timm.list_pretrained(f"{arch}.*")
        if name not in tagged:
            raise UnknownModelError("timm pretrained tag", name, tagged,
                                    hint=f"tags of {arch}: {', '.join(tagged) or 'none'}")
    return name


def timm_preprocessing(model: nn.Module) -> Preprocessing:
    """Input size, crop_pct, crop_mode, interpolation, mean and std of the model's
    ``pretrained_cfg`` (timm's defaults where it has none)."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    _, h, w = cfg["input_size"]
    if h != w:
        raise ModelLoadError(f"timm model input size {h}x{w} is not square; pass --input-size N")
    crop_pct = cfg.get("crop_pct") or 0.875
    mode = cfg.get("crop_mode") or "center"
    resample = RESAMPLE.get(str(cfg.get("interpolation")), RESAMPLE["bicubic"])
    return Preprocessing(math.floor(h / crop_pct), h, resample, 255.0, tuple(cfg["mean"]),
                         tuple(cfg["std"]), mode if mode in MODES else "center")


def timm_class_names(model: nn.Module) -> tuple[str, ...] | None:
    """Label names from the pretrained config, or the first synonym of each ImageNet subset
    label description (``"tench, Tinca tinca"`` -> ``"tench"``) that timm infers; None if
    neither gives one name per output."""
    classes = getattr(model, "num_classes", None)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    candidates = [cfg.get("label_descriptions"), cfg.get("label_names")]
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        candidates.append(ImageNetInfo(subset).label_descriptions() if subset else None)
    except Exception:  # no subset metadata for this model: the caller falls back
        pass
    names = next((n for n in candidates if n and len(n) == classes), None)
    return None if names is None else tuple(str(n).split(",")[0].strip() for n in names)


def _timm_cached(cfg: dict[str, Any]) -> Path | None:
    """The default weights file in the Hugging Face cache or the torch hub cache, if there."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        for file_name in ([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else HUB_FILES):
            found = try_to_load_from_cache(repo, file_name, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    url = cfg.get("url")
    return hub_cached(url) if url and hub_cached(url).is_file() else None


def _timm_pretrained(timm: ModuleType, builder: partial, cfg: Any, name: str, download: bool) -> nn.Module:
    """Model ``name`` with the default weights of its pretrained config ``cfg``: from the cache as a
    local file, else fetched by timm with ``download``."""
    spec = f"timm:{name}"
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsError(f"timm has no pretrained weights for {spec}; pass --weights FILE")
    cached = _timm_cached(cfg.to_dict())
    if cached is not None:
        return builder(pretrained=True, pretrained_cfg_overlay={"file": str(cached), "source": None})
    where = cfg.hf_hub_id or cfg.url
    if not download:
        raise WeightsError(f"no weights for {spec} in the Hugging Face or torch hub cache; pass "
                           f"--download to fetch them ({where}), or --weights FILE")
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise WeightsError(f"could not download the weights of {spec} ({where}): "
                           f"{why(exc)}; pass --weights FILE instead") from exc
