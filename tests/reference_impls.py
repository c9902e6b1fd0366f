"""Dense re-statements of the public DropBlock implementations' algorithms (as described in
../shared/notes and their sources), written plainly with torch ops: Bernoulli seeds, then pooling.
They are the tests' independent check of the closed-form models in dropblock.conventions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _maxpool_same_tf(seeds: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """TensorFlow 'SAME' max-pool with stride 1: pad (k-1)//2 before and k//2 after."""
    padded = F.pad(seeds, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2))
    return F.max_pool2d(padded, (kh, kw), stride=1)


def torchvision_keep(n, h, w, p, b, gen):
    k = min(b, h, w)
    g = p * h * w / (k * k * (h - k + 1) * (w - k + 1))
    noise = torch.rand(n, 1, h - k + 1, w - k + 1, generator=gen) < g
    noise = F.pad(noise.float(), [k // 2] * 4)
    return F.max_pool2d(noise, k, stride=1, padding=k // 2) == 0


def timm_keep(n, h, w, p, b, gen):
    kh, kw = min(b, h), min(b, w)
    g = p * h * w / (kh * kw * (h - kh + 1) * (w - kw + 1))
    seeds = (torch.rand(n, 1, h, w, generator=gen) < g).float()
    pooled = F.max_pool2d(seeds, (kh, kw), stride=1, padding=(kh // 2, kw // 2))
    pooled = pooled[..., (kh + 1) % 2:, (kw + 1) % 2:]
    return pooled == 0


def miguelvr_keep(n, h, w, p, b, gen):
    seeds = (torch.rand(n, 1, h, w, generator=gen) < p / b**2).float()
    pooled = F.max_pool2d(seeds, b, stride=1, padding=b // 2)
    if b % 2 == 0:
        pooled = pooled[..., :-1, :-1]
    return pooled == 0


def tf_keep(n, h, w, p, b, gen):
    assert h == w
    k = min(b, w)
    g = p * w * w / (k * k) / (w - k + 1) ** 2
    i = torch.arange(w)
    ok = (i >= k // 2) & (i < w - (k - 1) // 2)
    valid = ok[:, None] & ok[None, :]
    seeds = ((torch.rand(n, 1, h, w, generator=gen) < g) & valid).float()
    return _maxpool_same_tf(seeds, k, k) == 0


def keras_cv_keep(n, h, w, p, b, gen):
    g = p * w * h / (b * b) / ((w - b + 1) * (h - b + 1))
    rows, cols = torch.arange(h), torch.arange(w)
    ok_c = (cols >= b // 2) & (cols < w - (b - 1) // 2)
    ok_r = (rows >= b // 2) & (rows < w - (b - 1) // 2)  # keras-cv bounds rows by the width
    valid = ok_r[:, None] & ok_c[None, :]
    seeds = ((torch.rand(n, 1, h, w, generator=gen) < g) & valid).float()
    return _maxpool_same_tf(seeds, b, b) == 0


REFERENCES = {
    "torchvision": torchvision_keep,
    "timm": timm_keep,
    "miguelvr": miguelvr_keep,
    "tf": tf_keep,
    "keras_cv": keras_cv_keep,
}
