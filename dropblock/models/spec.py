"""Model specs: the text a user gives to name a model. Needs no torch.

Forms:

- a built-in name: ``efficientnet-lite0``, ``resnet18``, ``resnet50`` (case, ``-``/``_`` ignored);
- ``torchvision:NAME``: a classification model of ``torchvision.models``;
- ``timm:NAME``: a timm model, optionally with a pretrained tag (``timm:resnet50.a1_in1k``);
- ``module.path:function``: an importable module's function, called with no arguments;
- ``path/to/file.py:function``: a Python file's function, called with no arguments.

The prefixes ``torchvision:`` and ``timm:`` are reserved: no module of that name is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ModelSpecError, UnknownModelError, UnknownNameError
from .names import MODEL_NAMES, resolve_model

KINDS: tuple[str, ...] = ("builtin", "torchvision", "timm", "module", "file")
RESERVED: tuple[str, ...] = ("torchvision", "timm")
FORMS = (
    f"a model is a built-in name ({', '.join(MODEL_NAMES)}), torchvision:NAME, timm:NAME, "
    "module.path:function or path/to/file.py:function"
)
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        kind: one of :data:`KINDS`.
        name: built-in name (canonical), torchvision/timm model name, module path or file path.
        function: the function to call for ``module``/``file``; ``""`` otherwise.
    """

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
        raise ModelSpecError(
            f"model {text!r}: {function!r} after ':' is not a function name; {FORMS}"
        )
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
    """Parse a model spec (see the module docstring).

    Raises:
        UnknownModelError: a bare name that is not a built-in (close matches first).
        ModelSpecError: any other malformed spec; the message lists the forms.
    """
    text = str(text).strip()
    if not text:
        raise ModelSpecError(f"empty model name; {FORMS}")
    prefix, sep, rest = text.partition(":")
    if sep and prefix.strip().lower() in RESERVED:
        kind, rest = prefix.strip().lower(), rest.strip()
        if not rest:
            raise ModelSpecError(f"model {text!r} names no model: give {kind}:NAME, e.g. "
                                 f"{kind}:resnet50")
        return ModelSpec(kind, rest)
    if sep:
        return _code_spec(text)
    if text.endswith(".py"):
        raise ModelSpecError(f"model {text!r}: name the function to call, as {text}:function")
    try:
        return ModelSpec("builtin", resolve_model(text))
    except UnknownNameError:
        raise UnknownModelError("model", text, MODEL_NAMES, hint=FORMS) from None
