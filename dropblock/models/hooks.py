"""Editing one module's output in any model, N edits at a time, through forward hooks.

A clean pass runs the model once on the image, records every module call
(:class:`~dropblock.models.trace.CallRecorder`), keeps the target module's output and, at the
moment the target starts, a copy of the output of each finished call that fed it: the outermost
calls, inside the target's ancestors, that returned a (1, C, H, W) map not edited in place since.

Each batch of N edited maps then reruns the model on N copies of the image (the batch dimension
of a stride-0 view) with the target's ``forward`` replaced by "return the edited maps" and each
reusable call's ``forward`` by "return its saved map", so the prefix is not computed again; the
code around those calls runs as written. If that rerun does not call the modules as the clean
pass did, or raises, the batch is run again with only the target replaced (the whole prefix
computed N times), which is exact for any model. Either way row i is what a forward hook on the
target returning ``edits[i](output)`` gives, up to the last float bits of batched kernels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ModelLoadError, one_line
from .layers import check_logits, not_a_map, trace_of
from .trace import Call, CallRecorder, is_map


@dataclass
class CleanPass:
    """The clean pass's results.

    Attributes:
        logits: (1, K) output.
        feature: (1, C, H, W) copy of the target's output.
        reuse: (module name, call index) -> (saved (1, C, H, W) output, calls nested inside).
        totals: calls per module name in the whole pass.
    """

    logits: torch.Tensor
    feature: torch.Tensor
    reuse: dict[tuple[str, int], tuple[torch.Tensor, Counter[str]]]
    totals: Counter[str]


def _reusable(call: Call) -> bool:
    out = call.output
    return call.done and is_map(out) and out._version == call.version


def _plan(stack: Sequence[Call]) -> dict[tuple[str, int], tuple[torch.Tensor, Counter[str]]]:
    """The outermost finished calls under the target's ancestors whose maps can stand in."""
    reuse = {}
    todo = [child for ancestor in stack[:-1] for child in ancestor.children if child.done]
    while todo:
        call = todo.pop()
        if _reusable(call):
            nested = Counter(c.name for c in call.descendants())
            reuse[(call.name, call.index)] = (call.output.clone(), nested)
        else:
            todo.extend(call.children)
    return reuse


def clean_pass(model: nn.Module, x: torch.Tensor, target: str, model_name: str) -> CleanPass:
    """Run ``model`` (eval mode, no grad: the caller's job) on ``x`` (1, 3, H, W) once.

    Raises:
        LayerError: the target does not run exactly once or its output is not a (1, C, H, W) map.
        ModelLoadError: the forward pass raised, or its output is not (1, classes) logits.
    """
    found: dict[str, object] = {}

    def on_start(call: Call) -> None:
        if call.name == target and call.index == 0:
            found["reuse"] = _plan(rec.stack)
            rec.drop_all_outputs()

    def on_end(call: Call, output: object) -> None:
        if call.name == target and call.index == 0 and is_map(output):
            found["feature"] = output.clone()

    with CallRecorder(model, keep_outputs=True, on_start=on_start, on_end=on_end) as rec:
        try:
            logits = model(x)
        except Exception as exc:
            raise ModelLoadError(f"a forward pass of {model_name} failed: {one_line(exc)}") from exc
    if rec.counts[target] != 1 or "feature" not in found:
        raise not_a_map(target, trace_of(rec, logits), model_name)
    check_logits(tuple(logits.shape) if torch.is_tensor(logits) else None,
                 type(logits).__name__, model_name)
    return CleanPass(logits, found["feature"], found["reuse"], rec.counts.copy())


class _Patched:
    """Context manager: replaces ``forward`` of the named modules; restores it on exit."""

    def __init__(self, modules: dict[str, nn.Module],
                 make: Callable[[str, Callable], Callable]) -> None:
        self.modules, self.make = modules, make
        self.saved: dict[str, object] = {}

    def __enter__(self) -> None:
        for name, module in self.modules.items():
            if "forward" in module.__dict__:
                self.saved[name] = module.__dict__["forward"]
            module.forward = self.make(name, module.forward)

    def __exit__(self, *exc: object) -> None:
        for name, module in self.modules.items():
            del module.forward
            if name in self.saved:
                module.forward = self.saved[name]


def _rerun(model: nn.Module, x: torch.Tensor, target: str, edited: torch.Tensor,
           reuse: dict[tuple[str, int], tuple[torch.Tensor, Counter[str]]]) -> tuple[object, Counter]:
    """One batched pass with the target's output set to ``edited`` and ``reuse`` standing in."""
    n = edited.shape[0]
    counters: Counter[str] = Counter()
    names = {name for name, _ in reuse} | {target}
    modules = {name: module for name, module in model.named_modules() if name in names}

    def make(name: str, forward: Callable) -> Callable:
        def replaced(*args: object, **kwargs: object) -> object:
            index = counters[name]
            counters[name] += 1
            if name == target and index == 0:
                return edited
            saved = reuse.get((name, index))
            if saved is None:
                return forward(*args, **kwargs)
            counters.update(saved[1])
            return saved[0].expand(n, *saved[0].shape[1:])
        return replaced

    with _Patched(modules, make):
        out = model(x.expand(n, *x.shape[1:]) if reuse else x.repeat(n, 1, 1, 1))
    return out, counters


def edited_logits(model: nn.Module, x: torch.Tensor, target: str, edited: torch.Tensor,
                  clean: CleanPass, model_name: str) -> torch.Tensor:
    """(N, K) logits with the target's output replaced by ``edited`` (N, C, H, W)."""
    n, classes = edited.shape[0], clean.logits.shape[1]
    if clean.reuse:
        try:
            out, counters = _rerun(model, x, target, edited, clean.reuse)
            names = {name for name, _ in clean.reuse} | {target}
            if (torch.is_tensor(out) and tuple(out.shape) == (n, classes)
                    and all(counters[name] == clean.totals[name] for name in names)):
                return out
        except Exception:  # e.g. an in-place op on a reused map: rerun without reuse
            pass
    try:
        out, _ = _rerun(model, x, target, edited, {})
    except Exception as exc:
        raise ModelLoadError(f"a forward pass of {model_name} with {target} edited failed: "
                             f"{one_line(exc)}") from exc
    if not torch.is_tensor(out) or tuple(out.shape) != (n, classes):
        raise ModelLoadError(f"{model_name} with {target} edited returned "
                             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}"
                             f" for {n} images, expected ({n}, {classes}) logits")
    return out
