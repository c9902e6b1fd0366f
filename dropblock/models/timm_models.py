"""``timm:NAME``: timm models, their default weights from the Hugging Face (or torch hub) cache, and
preprocessing and class names from their ``pretrained_cfg``.

Cached weights go to timm as a local file (``pretrained_cfg_overlay``), so that timm's own fix-ups
(checkpoint filters, class-count adaptation) apply and nothing is fetched but with ``download=True``.
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from .errors import ModelLoadError, UnknownModelError, WeightsError, why
from .names import ModelSpec
from .preprocessing import MODES, RESAMPLE, Preprocessing
from .sources import Built, create, fitted, import_extra, random_init, weights_label
from .weights import hub_cached

HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin",
             "open_clip_model.safetensors")


def resolve_name(timm: ModuleType, name: str) -> str:
    """``name`` checked: a timm architecture, and a pretrained tag of it if one is given."""
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        names = timm.list_models()
        raise UnknownModelError("timm model", name, names,
                                hint=f"{len(names)} models in all: timm.list_models()")
    if tag:
        tagged = timm.list_pretrained(f"{arch}.*")
        if name not in tagged:
            raise UnknownModelError("timm pretrained tag", name, tagged,
                                    hint=f"tags of {arch}: {', '.join(tagged) or 'none'}")
    return name


def preprocessing_of(model: nn.Module) -> Preprocessing:
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


def class_names_of(model: nn.Module) -> tuple[str, ...] | None:
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


def _cached_file(cfg: dict[str, Any]) -> Path | None:
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


def build(spec: ModelSpec, weights: str | Path | None, pretrained: bool, download: bool,
          meta: bool) -> Built:
    """timm model ``spec.name`` with its default weights (``pretrained``), the weights file
    ``weights`` (a file with another number of classes gets a model built for them), or random
    init (neither; on the meta device, with no data, for ``meta``)."""
    timm = import_extra("timm")
    name = resolve_name(timm, spec.name)
    text = f"timm:{name}"
    builder = partial(create, timm.create_model, text, name)
    if weights is not None:
        model, classes = fitted(builder, text, weights, _default_classes(name))
    else:
        model = (_pretrained(timm, builder, name, text, download) if pretrained
                 else random_init(builder, meta))
        classes = int(model.num_classes)
    return Built(model, preprocessing_of(model), classes, class_names_of(model),
                 weights_label(weights, pretrained))


def _pretrained(timm: ModuleType, builder: partial, name: str, spec: str,
                download: bool) -> nn.Module:
    """The model with its default weights: from the cache as a local file, else fetched by timm
    with ``download``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsError(f"timm has no pretrained weights for {spec}; pass --weights FILE")
    cached = _cached_file(cfg.to_dict())
    if cached is not None:
        return builder(pretrained=True,
                       pretrained_cfg_overlay={"file": str(cached), "source": None})
    where = cfg.hf_hub_id or cfg.url
    if not download:
        raise WeightsError(f"no weights for {spec} in the Hugging Face or torch hub cache; pass "
                           f"--download to fetch them ({where}), or --weights FILE")
    try:
        return timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise WeightsError(f"could not download the weights of {spec} ({where}): "
                           f"{why(exc)}; pass --weights FILE instead") from exc


def _default_classes(name: str) -> int:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    classes = getattr(cfg, "num_classes", None)
    return 1000 if classes is None else int(classes)  # 0: a headless model (features, no classifier)
