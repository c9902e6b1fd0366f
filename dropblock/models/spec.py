"""Model specs, the text that names a model (needs no torch): a built-in name (``resnet50``),
``torchvision:NAME``, ``timm:NAME`` (with an optional pretrained tag: ``timm:resnet50.a1_in1k``), or
the function to call with no arguments, ``module.path:function`` or ``path/to/file.py:function``.
The prefixes ``torchvision:`` and ``timm:`` are reserved: no module of that name is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ModelSpecError, UnknownModelError, UnknownNameError
from .names import MODEL_NAMES, resolve_model

RESERVED: tuple[str, ...] = ("torchvision", "timm")
FORMS = (
    f"a model is a built-in name ({', '.join(MODEL_NAMES)}), torchvision:NAME, timm:NAME, "
    "module.path:function or path/to/file.py:function"
)
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


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
    """The spec ``text`` names; a ModelSpecError (UnknownModelError for a bare name) lists the forms."""
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
