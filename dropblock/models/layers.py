"""Layer tables of any model: every module whose output is an (N, C, H, W) feature map.

A layer is a module by its ``named_modules`` name (``layer3.1.conv2``, ``features.6``), with
its type and its output shape from one forward pass of a (1, 3, S, S) zero image at the model's
input size S. The built-in networks also accept their short names (``stem``, ``blocks.5``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .base import BuiltinNet
from .errors import LayerError, ModelLoadError, UnknownNameError, why
from .modes import eval_mode
from .names import resolve_layer

NEAR = 3  # how many 4-D layers on each side an error names


@dataclass(frozen=True)
class LayerInfo:
    """A layer a user can pick.

    Attributes:
        name: user-facing name, e.g. ``"blocks.5"``, ``"layer3.1"`` or ``"layer3.1.conv2"``.
        type: class name of the module producing it, e.g. ``"MBConvBlock"``, ``"Conv2d"``.
        shape: (C, H, W) of its output for one image at the model's input size.
        dropblock_ok: the map is larger than 1x1, so spatial blocks make sense.
        calls: how many times the module runs in one forward pass (a shared activation
            module runs more than once; only a layer that runs once can be edited).
    """

    name: str
    type: str
    shape: tuple[int, int, int]
    dropblock_ok: bool
    calls: int = 1


@dataclass(frozen=True)
class ModuleRun:
    """A module's first call in a forward pass: name, type, output shape (None if not a
    tensor), output type name, number of calls, ``finished`` (how many first calls of other
    modules returned before it) and ``same_as`` (the module that first returned the very same
    output object, e.g. a Sequential's last child; None if none did)."""

    name: str
    type: str
    shape: tuple[int, ...] | None
    output_type: str
    calls: int
    finished: int = 0
    same_as: str | None = None


@dataclass(frozen=True)
class Trace:
    """What one forward pass showed: every module that ran (in call order) and the output."""

    runs: tuple[ModuleRun, ...]
    output_shape: tuple[int, ...] | None
    output_type: str

    def layers(self) -> tuple[LayerInfo, ...]:
        """The modules whose (first) output is a 4-D map, in call order."""
        return tuple(
            LayerInfo(r.name, r.type, r.shape[1:], r.shape[2] * r.shape[3] > 1, r.calls)
            for r in self.runs if r.shape is not None and len(r.shape) == 4
        )

    def near(self, name: str, once: bool = False) -> list[str]:
        """Up to NEAR 4-D layers on each side of ``name`` in call order (``once``: only layers
        that run once)."""
        names = [r.name for r in self.runs]
        ok = {li.name for li in self.layers() if li.calls == 1 or not once}
        at = names.index(name) if name in names else len(names)
        before = [n for n in names[:at] if n in ok][-NEAR:]
        after = [n for n in names[at + 1:] if n in ok][:NEAR]
        return before + after


def on_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device and in the float dtype of ``model``'s first parameter (as it is for a
    model without parameters; float32 for one without float parameters)."""
    param = next(model.parameters(), None)
    if param is None:
        return x
    return x.to(param.device, param.dtype if param.is_floating_point() else torch.float32)


def record_calls(model: nn.Module, run: Callable[[], object]) -> Trace:
    """Call ``run()`` (one forward pass of ``model``) with a forward pre-hook and a forward hook on
    every submodule, all removed afterwards: the :class:`Trace` of the modules that ran, in the
    order their first calls started."""
    started: dict[str, int] = {}
    counts: dict[str, int] = {}
    first: dict[str, tuple[nn.Module, object]] = {}  # in the order first calls returned
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def pre(mod: nn.Module, args: tuple, name: str = name) -> None:
            started.setdefault(name, len(started))

        def post(mod: nn.Module, args: tuple, out: object, name: str = name) -> None:
            counts[name] = counts.get(name, 0) + 1
            first.setdefault(name, (mod, out))  # held until the pass ends: ids stay unique

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        out = run()
    finally:
        for handle in handles:
            handle.remove()
    owner: dict[int, str] = {}
    runs = {}
    for finished, (name, (mod, value)) in enumerate(first.items()):
        same_as = owner.setdefault(id(value), name)
        shape = tuple(value.shape) if torch.is_tensor(value) else None
        runs[name] = ModuleRun(name, type(mod).__name__, shape, type(value).__name__, counts[name],
                               finished, None if same_as == name else same_as)
    ordered = sorted(runs.values(), key=lambda r: started.get(r.name, len(started)))
    return Trace(tuple(ordered), tuple(out.shape) if torch.is_tensor(out) else None,
                 type(out).__name__)


def trace_model(model: nn.Module, size: int) -> Trace:
    """Run ``model`` once (eval mode, no grad) on a zero (1, 3, size, size) image and record
    every module call (:func:`record_calls`).

    Raises:
        ModelLoadError: the forward pass raised.
    """
    x = on_model(model, torch.zeros(1, 3, size, size))
    try:
        with eval_mode(model), torch.no_grad():
            return record_calls(model, lambda: model(x))
    except (Exception, SystemExit) as exc:  # user code's sys.exit() is a failure too
        raise ModelLoadError(f"a forward pass of a 1x3x{size}x{size} image failed: "
                             f"{why(exc)}") from exc


def filter_layers(layers: Sequence[LayerInfo], patterns: str | Sequence[str] | None) -> list[LayerInfo]:
    """The layers whose name matches any glob in ``patterns`` (fnmatch, case-sensitive;
    ``*`` also matches dots: ``layer3.*.conv2``); all of them for None."""
    if patterns is None:
        return list(layers)
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return [li for li in layers if any(fnmatch.fnmatchcase(li.name, p) for p in patterns)]


def layer_path(model: nn.Module, layer: str) -> tuple[str, str] | None:
    """``(display name, named_modules name)`` of ``layer`` in ``model``, or None if unknown.

    A built-in network's short names (``stem``, ``blocks.5``, ``layer3``) are tried first.
    """
    if isinstance(model, BuiltinNet):
        try:
            alias = resolve_layer(model.arch, layer)
            return alias, model.layer_paths[alias]
        except UnknownNameError:
            pass
    key = str(layer).strip()
    if key and key in dict(model.named_modules()):
        return key, key
    return None


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    """The submodule whose forward output is ``layer``'s activation (to hook it): a built-in
    network's short name (``blocks.5``) or any ``named_modules`` name of any model (or of a
    :class:`~dropblock.models.LoadedModel`'s module).

    Raises:
        UnknownNameError: unknown layer.
    """
    model = getattr(model, "module", model)  # a LoadedModel
    found = layer_path(model, layer)
    if found is None:
        if isinstance(model, BuiltinNet):
            resolve_layer(model.arch, layer)  # raises with the short names listed
        raise UnknownNameError("layer", str(layer), [n for n, _ in model.named_modules() if n])
    return model.get_submodule(found[1])


def unknown_layer(layer: str, trace: Trace, model_name: str,
                  model: nn.Module | None = None) -> UnknownNameError:
    """The error for a layer name that no module has: close matches among the 4-D layers (a built-in
    ``model``'s short names stand for their modules)."""
    paths = model.layer_paths if isinstance(model, BuiltinNet) else {}
    names = list(paths) + [li.name for li in trace.layers() if li.name not in set(paths.values())]
    return UnknownNameError("layer", str(layer), names, context=model_name,
                            hint=f"{len(names)} layers in all (`dropblock layers --model {model_name} "
                                 f"--filter '*'` lists them)")


def not_a_map(name: str, trace: Trace, model_name: str) -> LayerError:
    """The error for a module that cannot be edited, naming the editable layers near it."""
    run = next((r for r in trace.runs if r.name == name), None)
    if run is None:
        what = "does not run in a forward pass"
    elif run.calls > 1:
        near = ", ".join(trace.near(name, once=True)) or "none"
        return LayerError(f"layer {name!r} of {model_name} runs {run.calls} times in one forward "
                          f"pass, so its output is not one map; layers near it that run once: {near}")
    elif run.shape is None:
        what = f"outputs a {run.output_type}, not a tensor"
    else:
        what = f"outputs shape {run.shape}, not an (N, C, H, W) map"
    near = ", ".join(trace.near(name)) or "none"
    return LayerError(f"layer {name!r} of {model_name} {what}; 4-D layers near it: {near}")


def check_logits(shape: tuple[int, ...] | None, output_type: str, model_name: str) -> int:
    """The class count of a (1, classes) logits output.

    Raises:
        ModelLoadError: the output is not a tensor of shape (1, classes).
    """
    if shape is None:
        raise ModelLoadError(f"{model_name} returns a {output_type}, expected (1, classes) logits "
                             f"for one image")
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise ModelLoadError(f"{model_name} returns shape {shape} for one image, expected "
                             f"(1, classes) logits")
    return int(shape[1])
