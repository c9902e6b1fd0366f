"""An RGB image as a model's normalized square input: resize, centre crop and per-channel
normalization, as torchvision's weights transforms and timm's ``pretrained_cfg`` describe them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from dropblock.errors import UsageError

from .names import resolve_model

MIN_STD = 1e-6  #: the smallest normalization std taken, in 0..1 pixel units
MODES: tuple[str, ...] = ("center", "squash", "border")
RESAMPLE: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize to ``resize`` px (Pillow, ``resample``), centre-crop ``crop`` x ``crop`` px, then per
    channel ``(pixel / divisor - mean) / std`` with pixels in 0..255. ``mode`` (timm's ``crop_mode``)
    scales the short side (``"center"``), both sides (``"squash"``) or the long side (``"border"``,
    the crop padded with the mean colour) to ``resize``."""

    resize: int
    crop: int
    resample: Image.Resampling
    divisor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "center"

    @property
    def short_side(self) -> int | None:
        """The side, px, an image's short side is scaled to; None in the modes that scale no side past
        ``resize``."""
        return self.resize if self.mode == "center" else None

    def with_overrides(self, input_size: int | None = None, mean: Sequence[float] | None = None,
                       std: Sequence[float] | None = None) -> Preprocessing:
        """A copy with another input size (the resize keeps its ratio to the crop), mean or std (in
        0..1 pixel units, as torchvision and timm write them)."""
        out = self
        if input_size is not None:
            if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
                raise UsageError(f"input_size must be an integer >= 1, got {input_size!r}")
            resize = max(input_size, math.floor(input_size * self.resize / self.crop))
            out = replace(out, crop=input_size, resize=resize)
        scale = 255.0 / self.divisor
        if mean is not None:
            out = replace(out, mean=tuple(v * scale for v in _triple(mean, "mean", False)))
        if std is not None:
            out = replace(out, std=tuple(v * scale for v in _triple(std, "std", True)))
        return out


def _triple(values: Sequence[float], name: str, positive: bool) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be 3 numbers (R, G, B), got {values!r}") from None
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise UsageError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
    if positive and min(out) < MIN_STD:  # smaller ones overflow float32 inputs to inf
        raise UsageError(f"{name} must be >= {MIN_STD:g} (0..1 pixel units), got {values!r}")
    return out  # type: ignore[return-value]


#: ImageNet's defaults: short side to 256 (224 / 0.875), bilinear, centre crop 224.
IMAGENET = Preprocessing(256, 224, Image.Resampling.BILINEAR, 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PREPROCESSING: dict[str, Preprocessing] = {
    "efficientnet-lite0": Preprocessing(
        256, 224, Image.Resampling.BICUBIC, 1.0, (127.0,) * 3, (128.0,) * 3
    ),
    "resnet18": IMAGENET,
    "resnet50": IMAGENET,
}


def _resized_size(h: int, w: int, resize: int, mode: str) -> tuple[int, int]:
    """(new_w, new_h) of the resize step."""
    if mode == "squash":
        return resize, resize
    if mode == "border":  # the long side to resize (timm ResizeKeepRatio, longest=1)
        ratio = max(h, w) / resize
        return round(w / ratio), round(h / ratio)
    if w <= h:
        return resize, int(resize * h / w)
    return int(resize * w / h), resize


def resize_and_crop(image: np.ndarray, resize: int, crop: int, resample: Image.Resampling,
                    mode: str = "center", fill: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """(H, W, 3) uint8 -> (crop, crop, 3) uint8 as torchvision's ``Resize`` + ``CenterCrop`` (and timm's
    ``CenterCropOrPad``) do on a PIL image: resize as ``mode`` says, pad with ``fill`` to the crop."""
    h, w = image.shape[:2]
    new_w, new_h = _resized_size(h, w, resize, mode)
    pil = Image.fromarray(image, mode="RGB")
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), resample=resample)
    if new_w < crop or new_h < crop:
        canvas = Image.new("RGB", (max(new_w, crop), max(new_h, crop)), fill)
        canvas.paste(pil, ((canvas.width - new_w) // 2, (canvas.height - new_h) // 2))
        pil, new_w, new_h = canvas, canvas.width, canvas.height
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return np.asarray(pil.crop((left, top, left + crop, top + crop)), dtype=np.uint8).copy()


def _spec_of(model: object) -> Preprocessing:
    if isinstance(model, Preprocessing):
        return model
    if isinstance(model, str):
        return PREPROCESSING[resolve_model(model)]
    spec = getattr(model, "preprocessing", None)
    if isinstance(spec, Preprocessing):
        return spec
    raise TypeError(f"expected a model name, a LoadedModel or a Preprocessing, got {type(model).__name__}")


def preprocess(model: object, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """``(x, crop)`` for an (H, W, 3) uint8 RGB image and a built-in's name, a LoadedModel or a
    Preprocessing: x is the (1, 3, S, S) float32 CPU input, crop the (S, S, 3) uint8 region it shows."""
    spec = _spec_of(model)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise UsageError(f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    if min(image.shape[:2]) < 1:
        raise UsageError(f"empty image of shape {image.shape}")
    fill = tuple(int(round(min(255.0, max(0.0, m * spec.divisor)))) for m in spec.mean)
    crop = resize_and_crop(np.ascontiguousarray(image), spec.resize, spec.crop, spec.resample, spec.mode, fill)
    x = torch.from_numpy(crop).permute(2, 0, 1).to(torch.float32) / spec.divisor  # a copy: crop stays apart
    mean, std = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1) for v in (spec.mean, spec.std))
    return ((x - mean) / std).unsqueeze(0).contiguous(), crop
