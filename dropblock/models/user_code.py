"""The user's own model code: ``module.path:function`` or ``path/to/file.py:function``.

The function is called with no arguments and must return an ``nn.Module``. Code runs only
because the user named it; a ``.py`` file runs with its own folder first on ``sys.path`` (so it
can import its neighbours), as ``python file.py`` would.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from torch import nn

from .errors import ModelLoadError, ModelSpecError, UnknownNameError, why
from .spec import ModelSpec


def _import_module(name: str, spec_text: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:  # user code's sys.exit() is a failure too
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and (name == missing or name.startswith(missing + ".")):
            raise ModelSpecError(f"model {spec_text!r}: no module named {missing!r}; install it "
                                 f"or add its folder to PYTHONPATH") from None
        raise ModelLoadError(f"importing {name} for model {spec_text!r} failed: "
                             f"{why(exc)}") from exc


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
            valid = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_"))
            raise UnknownNameError("function", dotted, valid, context=where)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"model {spec_text!r}: {dotted} in {where} is a "
                             f"{type(obj).__name__}, not a function")
    return obj


def build_user_model(spec: ModelSpec) -> nn.Module:
    """Import the module or file of ``spec`` and call its function with no arguments.

    Raises:
        ModelSpecError: no such module or file, or the name is not callable.
        UnknownNameError: no such function (close matches first).
        ModelLoadError: importing raised, the function raised, or it returned no nn.Module.
    """
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
        raise ModelLoadError(f"{text}() returned a {type(model).__name__}, expected a "
                             f"torch.nn.Module")
    return model
