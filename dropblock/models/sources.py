"""Building a model from each kind of spec: its module, preprocessing, class count and names.

The built-ins and user code are built here (``torchvision:`` and ``timm:`` specs in :mod:`~.hubs`).
User code (``module.path:function`` or ``path/to/file.py:function``) runs only because the user named
it; a file runs with its own folder first on ``sys.path``, as ``python file.py`` would.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from .errors import ModelLoadError, ModelSpecError, UnknownNameError, why
from .layers import Trace, check_logits, trace_model
from .names import ModelSpec, resolve_model
from .nets import BuiltinNet, EfficientNetLite0, resnet18, resnet50
from .preprocessing import IMAGENET, PREPROCESSING, Preprocessing
from .weights import fit_state_dict, load_weights, read_state_dict

_BUILDERS = {"efficientnet-lite0": EfficientNetLite0, "resnet18": resnet18, "resnet50": resnet50}


@dataclass(frozen=True)
class Built:
    """A freshly built model (CPU, or meta when built without data) with K = ``classes`` outputs,
    the class ``names`` of the source's metadata (maybe not K of them), and the ``trace`` of a
    forward pass already made to learn K (user code)."""

    module: nn.Module
    preprocessing: Preprocessing
    classes: int
    names: tuple[str, ...] | None
    trace: Trace | None = None


def build_model(name: str, num_classes: int = 1000) -> BuiltinNet:
    """A randomly initialised built-in network in eval mode (uses torch's global RNG)."""
    return _BUILDERS[resolve_model(name)](num_classes=num_classes).eval()


def build_builtin(spec: ModelSpec, weights: str | Path | None, pretrained: bool, download: bool, meta: bool) -> Built:
    """A built-in network (our own code): default weights from its package or the hub cache."""
    if weights is None and not pretrained:
        model = random_init(partial(build_model, spec.name), meta)
    else:
        model = load_weights(build_model(spec.name), weights, download)
    return Built(model, PREPROCESSING[spec.name], 1000, None)


def build_user(spec: ModelSpec, weights: str | Path | None, size: int) -> Built:
    """The ``nn.Module`` that the function of ``spec`` returns, called with no arguments, with its own
    weights or ``weights``; ImageNet preprocessing; K from one forward pass at ``size``."""
    text = str(spec)
    if spec.kind == "file":
        module, where = _import_file(spec.name, text), spec.name
    else:
        module, where = _import_module(spec.name, text), f"module {spec.name}"
    function = _function(module, spec.function, where, text)
    try:
        model = function()
    except (Exception, SystemExit) as exc:  # user code's sys.exit() is a failure too
        raise ModelLoadError(f"{text}() raised {why(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{text}() returned a {type(model).__name__}, expected a torch.nn.Module")
    if weights is not None:
        fit_state_dict(model, read_state_dict(weights), str(Path(weights).expanduser()), text)
    trace = trace_model(model.eval(), size)
    classes = check_logits(trace.output_shape, trace.output_type, text)
    return Built(model, IMAGENET, classes, None, trace)


def _import_module(name: str, spec_text: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:  # user code's sys.exit() is a failure too
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and (name == missing or name.startswith(missing + ".")):
            raise ModelSpecError(f"model {spec_text!r}: no module named {missing!r}; install it "
                                 f"or add its folder to PYTHONPATH") from None
        raise ModelLoadError(f"importing {name} for model {spec_text!r} failed: {why(exc)}") from exc


def _import_file(path_text: str, spec_text: str) -> ModuleType:
    path = Path(path_text).expanduser()
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ModelSpecError(f"model {spec_text!r}: {path} {what}")
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"_dropblock_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"model {spec_text!r}: cannot import {path} as Python code")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # user code's sys.exit() is a failure too
        del sys.modules[name]
        raise ModelLoadError(f"running {path} for model {spec_text!r} failed: {why(exc)}") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def _function(module: ModuleType, dotted: str, where: str, spec_text: str) -> Callable:
    obj: object = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            valid = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise UnknownNameError("function", dotted, valid, context=where)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"model {spec_text!r}: {dotted} in {where} is a {type(obj).__name__}, not a function")
    return obj


def random_init(build: Callable[[], nn.Module], meta: bool) -> nn.Module:
    """``build()`` on the meta device (no data) for ``meta``, else on the CPU."""
    with torch.device("meta" if meta else "cpu"):
        return build()

