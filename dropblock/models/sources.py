"""Building a model from each kind of spec: its module, preprocessing, class count and names.

The built-ins and user code are built here; ``torchvision:`` and ``timm:`` specs by their own
modules, with the steps they share: importing the extra, wrapping the builder's errors, random
init (on the meta device when no data is needed) and fitting a weights file.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from .efficientnet_lite import EfficientNetLite0
from .errors import ModelLoadError, WeightsError, why
from .layers import BuiltinNet, Trace, check_logits, trace_model
from .names import resolve_model
from .preprocessing import PREPROCESSING, Preprocessing, imagenet_preprocessing
from .resnet import resnet18, resnet50
from .spec import ModelSpec
from .weights import build_and_fit, fit_state_dict, load_weights, read_state_dict

_BUILDERS = {"efficientnet-lite0": EfficientNetLite0, "resnet18": resnet18, "resnet50": resnet50}


@dataclass(frozen=True)
class Built:
    """A freshly built model and what its source says about it.

    Attributes:
        module: the model (CPU, or meta when built without data).
        preprocessing: from the source's config.
        classes: K outputs.
        names: class names from the source's metadata, if any (may not have K entries).
        weights: ``"default"``, a file path or ``"random init"``.
        trace: a forward pass already made to learn K (user code), else None.
    """

    module: nn.Module
    preprocessing: Preprocessing
    classes: int
    names: tuple[str, ...] | None
    weights: str
    trace: Trace | None = None


def weights_label(weights: str | Path | None, pretrained: bool) -> str:
    """Where the weights come from: the file, ``"default"`` or ``"random init"``."""
    if weights is not None:
        return str(Path(weights).expanduser())
    return "default" if pretrained else "random init"


def build_model(name: str, num_classes: int = 1000) -> BuiltinNet:
    """A randomly initialised built-in ``name`` network in eval mode (uses torch's global RNG).

    Raises:
        UnknownNameError: unknown model name.
    """
    return _BUILDERS[resolve_model(name)](num_classes=num_classes).eval()


def build_builtin(spec: ModelSpec, weights: str | Path | None, pretrained: bool,
                  download: bool, meta: bool) -> Built:
    """A built-in network (our own code): default weights from its package or the hub cache."""
    if weights is None and not pretrained:
        model = random_init(partial(build_model, spec.name), meta)
    else:
        model = load_weights(build_model(spec.name), spec.name, weights=weights, download=download)
    return Built(model, PREPROCESSING[spec.name], 1000, None, weights_label(weights, pretrained))


def build_user(spec: ModelSpec, weights: str | Path | None, size: int) -> Built:
    """``module:function`` / ``file.py:function``, with the function's own weights or
    ``weights``; ImageNet preprocessing; K from one forward pass at ``size``."""
    from .user_code import build_user_model

    text = str(spec)
    model = build_user_model(spec)
    if weights is not None:
        fit_state_dict(model, read_state_dict(weights), str(Path(weights).expanduser()), text)
    trace = trace_model(model.eval(), size)
    classes = check_logits(trace.output_shape, trace.output_type, text)
    label = str(Path(weights).expanduser()) if weights is not None else "own code"
    return Built(model, imagenet_preprocessing(224), classes, None, label, trace)


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


def create(builder: Callable[..., nn.Module], spec: str, *args: object,
           **kwargs: object) -> nn.Module:
    """``builder(*args, **kwargs)``; whatever it raises (but a WeightsError) is a ModelLoadError."""
    try:
        return builder(*args, **kwargs)
    except WeightsError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"building {spec} failed: {why(exc)}") from exc


def random_init(build: Callable[[], nn.Module], meta: bool) -> nn.Module:
    """``build()`` on the meta device (no data) for ``meta``, else on the CPU."""
    with torch.device("meta" if meta else "cpu"):
        return build()


def fitted(build: Callable[..., nn.Module], spec: str, weights: str | Path,
           classes: int) -> tuple[nn.Module, int]:
    """``build()`` fitted with the state-dict file ``weights``, and its number of classes: a file
    whose output layer has other rows than ``classes`` gets ``build(num_classes=rows)``
    (:func:`~dropblock.models.weights.build_and_fit`).

    Raises:
        WeightsError: the file is unreadable or does not fit.
    """
    return build_and_fit(lambda n: build(**({} if n is None else {"num_classes": n})),
                         read_state_dict(weights), str(Path(weights).expanduser()), spec, classes)
