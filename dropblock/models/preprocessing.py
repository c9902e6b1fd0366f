"""Turning an RGB image into the normalized 224x224 network input of each model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .names import resolve_model


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize`` px (Pillow, ``resample``), centre-crop ``crop`` px,
    then per channel ``(pixel / divisor - mean) / std`` with pixels in 0..255."""

    resize: int
    crop: int
    resample: Image.Resampling
    divisor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_IMAGENET = dict(divisor=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

PREPROCESSING: dict[str, Preprocessing] = {
    "efficientnet-lite0": Preprocessing(
        256, 224, Image.Resampling.BICUBIC, 1.0, (127.0,) * 3, (128.0,) * 3
    ),
    "resnet18": Preprocessing(256, 224, Image.Resampling.BILINEAR, **_IMAGENET),
    "resnet50": Preprocessing(256, 224, Image.Resampling.BILINEAR, **_IMAGENET),
}


def resize_and_crop(image: np.ndarray, resize: int, crop: int,
                    resample: Image.Resampling) -> np.ndarray:
    """(H, W, 3) uint8 -> (crop, crop, 3) uint8: short side to ``resize`` (long side
    ``int(resize * long / short)``), then the centre ``crop`` square, as torchvision's
    ``Resize`` + ``CenterCrop`` do on a PIL image."""
    h, w = image.shape[:2]
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    pil = Image.fromarray(image, mode="RGB")
    if (new_w, new_h) != (w, h):
        pil = pil.resize((new_w, new_h), resample=resample)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return np.asarray(pil.crop((left, top, left + crop, top + crop)), dtype=np.uint8).copy()


def preprocess(model_name: str, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Network input for ``model_name`` from an RGB image.

    Args:
        model_name: a registered model name.
        image: (H, W, 3) uint8 RGB.

    Returns:
        ``(x, crop)``: x is (1, 3, 224, 224) float32 on the CPU; crop is the (224, 224, 3)
        uint8 RGB region the network sees (for overlays).

    Raises:
        UnknownNameError: unknown model name.
        ValueError: ``image`` is not (H, W, 3) uint8.
    """
    spec = PREPROCESSING[resolve_model(model_name)]
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    crop = resize_and_crop(np.ascontiguousarray(image), spec.resize, spec.crop, spec.resample)
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1).to(torch.float32)
    if spec.divisor != 1.0:
        x = x / spec.divisor
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    x = ((x - mean) / std).unsqueeze(0).contiguous()
    return x, crop
