"""``timm:NAME``: timm models, their default weights from the Hugging Face (or torch hub) cache,
and preprocessing and class names from their ``pretrained_cfg``.

Cached weights are handed to timm as a local file (``pretrained_cfg_overlay=dict(file=...)``),
so timm's own fix-ups (checkpoint filters, class-count adaptation) apply and nothing is fetched;
timm reads torch files with ``weights_only=True`` and ``.safetensors`` with safetensors. Only
``download=True`` lets timm fetch from the Hub.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from dropblock.errors import one_line

from .errors import ModelLoadError, UnknownModelError, WeightsError
from .preprocessing import MODES, RESAMPLE, Preprocessing
from .weights import build_and_fit, read_state_dict

EXTRA = "pip install 'dropblock[timm]'"
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin",
             "open_clip_model.safetensors")


def import_timm() -> ModuleType:
    """``timm``, or a ModelLoadError naming the extra."""
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"timm: models need timm, which is not installed: {EXTRA}") from None
    except Exception as exc:
        raise ModelLoadError(f"timm cannot be imported: {one_line(exc, with_type=True, limit=160)}") from exc
    return timm


def resolve_name(timm: ModuleType, name: str) -> str:
    """``name`` checked: a timm architecture, with a pretrained tag that it has if one is given.

    Raises:
        UnknownModelError: unknown architecture or tag; close matches first.
    """
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
    ``pretrained_cfg`` (timm's defaults where it has none).

    Raises:
        ModelLoadError: a non-square input size.
    """
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
    for key in ("label_descriptions", "label_names"):
        names = cfg.get(key)
        if names and len(names) == classes:
            return tuple(str(n).split(",")[0].strip() for n in names)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if not subset:
            return None
        descriptions = ImageNetInfo(subset).label_descriptions()
    except Exception:  # no subset metadata for this model: the caller falls back
        return None
    if len(descriptions) != classes:
        return None
    return tuple(d.split(",")[0].strip() for d in descriptions)


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
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if cached.is_file():
            return cached
    return None


def build(timm: ModuleType, name: str, spec: str, *, weights: str | Path | None, pretrained: bool,
          download: bool, meta: bool = False) -> tuple[nn.Module, int]:
    """timm model ``name`` and its number of classes: with its default weights (``pretrained``),
    the weights file ``weights`` (a file with another number of classes gets a model built for
    them), or random init (neither; on the meta device, with no data, for ``meta``).

    Raises:
        WeightsError: weights missing (with how to get them), unreadable or not fitting.
        ModelLoadError: timm raised.
    """
    if weights is not None:
        state = read_state_dict(weights)
        return build_and_fit(
            lambda n: _create(timm, name, spec, **({} if n is None else {"num_classes": n})),
            state, str(Path(weights).expanduser()), spec, _default_classes(timm, name))
    if not pretrained:
        with torch.device("meta" if meta else "cpu"):
            model = _create(timm, name, spec)
        return model, int(model.num_classes)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsError(f"timm has no pretrained weights for {spec}; pass --weights FILE")
    cached = _cached_file(cfg.to_dict())
    if cached is not None:
        model = _create(timm, name, spec, pretrained=True,
                        pretrained_cfg_overlay={"file": str(cached), "source": None})
        return model, int(model.num_classes)
    where = cfg.hf_hub_id or cfg.url
    if not download:
        raise WeightsError(f"no weights for {spec} in the Hugging Face or torch hub cache; pass "
                           f"--download to fetch them ({where}), or --weights FILE")
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise WeightsError(f"could not download the weights of {spec} ({where}): "
                           f"{one_line(exc, with_type=True, limit=160)}; pass --weights FILE "
                           f"instead") from exc
    return model, int(model.num_classes)


def _default_classes(timm: ModuleType, name: str) -> int:
    """The class count of ``name``'s pretrained config: 0 for a headless one (``convnextv2_atto.fcmae``),
    1000 where the config gives none."""
    from timm.models import get_pretrained_cfg

    classes = getattr(get_pretrained_cfg(name), "num_classes", None)
    return 1000 if classes is None else int(classes)


def _create(timm: ModuleType, name: str, spec: str, **kwargs: object) -> nn.Module:
    try:
        return timm.create_model(name, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"building {spec} failed: {one_line(exc, with_type=True, limit=160)}") from exc
