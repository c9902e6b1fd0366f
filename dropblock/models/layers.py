"""Layer tables of any model: every module whose output is an (N, C, H, W) feature map, with its
(C, H, W) from one forward pass of a (1, 3, S, S) zero image at the model's input size S.

A layer is a module by its ``named_modules`` name (``layer3.1.conv2``); the built-in networks
(:class:`~.nets.BuiltinNet`) also take their short names (``stem``, ``blocks.5``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError, ModelLoadError, UnknownNameError, why
from .names import resolve_layer
from .nets import BuiltinNet

NEAR = 3  # how many 4-D layers on each side an error names


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; then each module gets its own ``training`` flag back
    (``model.train(flag)`` would give all one flag: a frozen BatchNorm in a training model would train)."""
    training = [module for module in model.modules() if module.training]
    if training:  # (a model in eval mode already is left as it is: no per-module work on every call)
        model.eval()
    try:
        yield model
    finally:
        for module in training:
            module.training = True


@dataclass(frozen=True)
class LayerInfo:
    """A layer a user can pick: ``shape`` is its output's (C, H, W) for one image; ``dropblock_ok``:
    H * W > 1; ``calls``: runs per forward pass (only a layer that runs once can be edited)."""

    name: str
    type: str
    shape: tuple[int, int, int]
    dropblock_ok: bool
    calls: int = 1


@dataclass(frozen=True)
class ModuleRun:
    """A module's first call in a forward pass. ``shape``: of its output, None if not a tensor;
    ``finished``: how many first calls of other modules returned before it; ``same_as``: the module
    that first returned the very same output object (a Sequential's last child), if any."""

    name: str
    type: str
    shape: tuple[int, ...] | None
    output_type: str
    calls: int
    finished: int = 0
    same_as: str | None = None


@dataclass(frozen=True)
class Trace:
    """One forward pass: every module that ran, in call order, and the output."""

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
        """Up to NEAR 4-D layers (``once``: that run once) on each side of ``name``, in call order."""
        names = [r.name for r in self.runs]
        ok = {li.name for li in self.layers() if li.calls == 1 or not once}
        at = names.index(name) if name in names else len(names)
        return [n for n in names[:at] if n in ok][-NEAR:] + [n for n in names[at + 1:] if n in ok][:NEAR]


def on_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device and in the float dtype of ``model``'s first parameter, if any."""
    param = next(model.parameters(), None)
    if param is None:
        return x
    return x.to(param.device, param.dtype if param.is_floating_point() else torch.float32)


def record_calls(model: nn.Module, run: Callable[[], object]) -> Trace:
    """The :class:`Trace` of ``run()``, one forward pass of ``model``, recorded with a pre-hook and a
    hook on every submodule (removed afterwards); runs in the order their first calls started."""
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
    runs = []
    for finished, (name, (mod, value)) in enumerate(first.items()):
        same_as = owner.setdefault(id(value), name)
        shape = tuple(value.shape) if torch.is_tensor(value) else None
        runs.append(ModuleRun(name, type(mod).__name__, shape, type(value).__name__, counts[name],
                              finished, None if same_as == name else same_as))
    runs.sort(key=lambda r: started.get(r.name, len(started)))
    return Trace(tuple(runs), tuple(out.shape) if torch.is_tensor(out) else None, type(out).__name__)


def trace_model(model: nn.Module, size: int) -> Trace:
    """:func:`record_calls` of one pass (eval mode, no grad) on a zero (1, 3, size, size) image;
    a ModelLoadError if it raised."""
    x = on_model(model, torch.zeros(1, 3, size, size))
    try:
        with eval_mode(model), torch.no_grad():
            return record_calls(model, lambda: model(x))
    except (Exception, SystemExit) as exc:  # user code's sys.exit() is a failure too
        raise ModelLoadError(f"a forward pass of a 1x3x{size}x{size} image failed: {why(exc)}") from exc


def filter_layers(layers: Sequence[LayerInfo], patterns: str | Sequence[str] | None) -> list[LayerInfo]:
    """The layers whose name matches any glob in ``patterns`` (case-sensitive; ``*`` also matches
    dots: ``layer3.*.conv2``); all of them for None."""
    if patterns is None:
        return list(layers)
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return [li for li in layers if any(fnmatch.fnmatchcase(li.name, p) for p in patterns)]


def layer_path(model: nn.Module, layer: str) -> tuple[str, str] | None:
    """``(display name, named_modules name)`` of ``layer`` (a built-in's short names first), or None."""
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
    """The submodule whose output is ``layer``'s activation (to hook it), in a model or a
    :class:`~dropblock.models.LoadedModel`; an UnknownNameError names the valid layers."""
    model = getattr(model, "module", model)  # a LoadedModel
    found = layer_path(model, layer)
    if found is None:
        if isinstance(model, BuiltinNet):
            resolve_layer(model.arch, layer)  # raises with the short names listed
        raise UnknownNameError("layer", str(layer), [n for n, _ in model.named_modules() if n])
    return model.get_submodule(found[1])


def unknown_layer(layer: str, trace: Trace, model_name: str, model: nn.Module | None = None) -> UnknownNameError:
    """The error for a layer name no module has: close matches among the 4-D layers (and a built-in
    ``model``'s short names, in place of their modules)."""
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
    """K, for an output of shape (1, K); else a ModelLoadError."""
    if shape is None:
        raise ModelLoadError(f"{model_name} returns a {output_type}, expected (1, classes) logits for one image")
    if len(shape) != 2 or shape[0] != 1 or shape[1] < 1:
        raise ModelLoadError(f"{model_name} returns shape {shape} for one image, expected (1, classes) logits")
    return int(shape[1])
