"""Editing one module's output in any model, N edits at a time, through forward hooks.

A clean pass runs the model once on the image, records the calls of the target, its ancestors
and their children (:class:`~dropblock.models.trace.CallRecorder`), keeps the target module's
output and, at the moment the target starts, a copy of the output of each finished call that fed
it: the outermost recorded calls, inside the target's ancestors, that returned a (1, C, H, W) map
not edited in place since.

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
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from dropblock.errors import one_line

from .errors import ModelLoadError
from .layers import check_logits, not_a_map, trace_model
from .trace import Call, CallRecorder, is_map


@dataclass
class CleanPass:
    """The clean pass's results.

    Attributes:
        logits: (1, K) output.
        feature: (1, C, H, W) copy of the target's output.
        reuse: (module name, call index) -> (its (1, C, H, W) output, calls nested inside).
        totals: calls per module name in the whole pass.
    """

    logits: torch.Tensor
    feature: torch.Tensor
    reuse: dict[tuple[str, int], tuple[torch.Tensor, Counter[str]]]
    totals: Counter[str]


def _reusable(call: Call) -> bool:
    """The call's map is as it returned it, or as the in-place call that absorbed it left it
    (``bn`` then ``ReLU(inplace=True)``: both stand in with the ReLU's map)."""
    out = call.output
    if not (call.done and is_map(out)):
        return False
    if out._version == call.version:
        return True
    taker = call.absorbed_by
    return taker is not None and taker.output is out and out._version == taker.version


class _Reads(TorchFunctionMode):
    """Records the ids of the tensors that torch functions get while it is on."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        self.seen.update(id(t) for t in tree_leaves((args, kwargs)) if torch.is_tensor(t))
        return func(*args, **kwargs)


class _Glue:
    """Watches the code between one recorded call's return and the next call's start, to find
    a map that the next call edits in place with nothing else reading it first."""

    def __init__(self) -> None:
        self.owner: Call | None = None
        self.reads: _Reads | None = None
        self.taker: tuple[Call, Call] | None = None  # (owner, the call right after it)

    def close(self, starting: Call | None) -> None:
        if self.reads is not None:
            self.reads.__exit__(None, None, None)
            if starting is not None and id(self.owner.output) not in self.reads.seen:
                self.taker = (self.owner, starting)
        self.owner = self.reads = None

    def ended(self, call: Call, output: object) -> None:
        self.close(None)
        if self.taker is not None and self.taker[1] is call:
            owner = self.taker[0]
            if output is owner.output:
                owner.absorbed_by = call
        self.taker = None
        if call.output is not None and is_map(call.output):
            self.owner, self.reads = call, _Reads()
            self.reads.__enter__()


def _plan(stack: Sequence[Call]) -> dict[tuple[str, int], tuple[torch.Tensor, Counter[str]]]:
    """The outermost finished calls under the target's ancestors whose maps can stand in."""
    reuse = {}
    todo = [child for ancestor in stack[:-1] for child in ancestor.children if child.done]
    while todo:
        call = todo.pop()
        if _reusable(call):
            nested = Counter(c.name for c in call.descendants())
            reuse[(call.name, call.index)] = (call.output, nested)
        else:
            todo.extend(call.children)
    return reuse


def _watch(model: nn.Module, target: str) -> set[str]:
    """The modules worth recording: the target, its ancestors by name, and their children (the
    children of a ModuleList/ModuleDict, which is never called itself, count as its parent's)."""
    parts = target.split(".")
    ancestors = {".".join(parts[:i]) for i in range(len(parts) + 1)}
    watch = set(ancestors)
    todo = [(name, model.get_submodule(name)) for name in ancestors if name != target]
    while todo:
        name, module = todo.pop()
        for child, sub in module.named_children():
            full = f"{name}.{child}" if name else child
            watch.add(full)
            if isinstance(sub, (nn.ModuleList, nn.ModuleDict)):
                todo.append((full, sub))
    return watch


def clean_pass(model: nn.Module, x: torch.Tensor, target: str, model_name: str) -> CleanPass:
    """Run ``model`` (eval mode, no grad: the caller's job) on ``x`` (1, 3, H, W) once, recording
    the calls of the target, its ancestors and their children (see :func:`_watch`).

    Raises:
        LayerError: the target does not run exactly once or its output is not a (1, C, H, W) map.
        ModelLoadError: the forward pass raised, or its output is not (1, classes) logits.
    """
    found: dict[str, object] = {}
    glue = _Glue()

    def on_start(call: Call) -> None:
        glue.close(call if rec.keep_outputs else None)
        if call.name == target and call.index == 0:
            found["reuse"] = _plan(rec.stack)
            found["versions"] = {k: v[0]._version for k, v in found["reuse"].items()}
            rec.drop_all_outputs()

    def on_end(call: Call, output: object) -> None:
        if rec.keep_outputs:
            glue.ended(call, output)
        if call.name == target and call.index == 0 and is_map(output):
            found["feature"] = output.clone()

    with CallRecorder(model, keep_outputs=True, names=_watch(model, target), on_start=on_start,
                      on_end=on_end) as rec:
        try:
            logits = model(x)
        except Exception as exc:
            raise ModelLoadError(f"a forward pass of {model_name} failed: "
                                 f"{one_line(exc, with_type=True, limit=160)}") from exc
        finally:
            glue.close(None)
    if rec.counts[target] != 1 or "feature" not in found:
        raise not_a_map(target, trace_model(model, x.shape[-1]), model_name)
    check_logits(tuple(logits.shape) if torch.is_tensor(logits) else None,
                 type(logits).__name__, model_name)
    versions = found["versions"]  # a map edited in place after the target ran is not reused
    reuse = {k: v for k, v in found["reuse"].items() if v[0]._version == versions[k]}
    return CleanPass(logits, found["feature"], reuse, rec.counts.copy())


class _Patched:
    """Context manager: replaces ``forward`` of the named modules; restores it on exit."""

    def __init__(self, modules: dict[str, nn.Module],
                 make: Callable[[str, Callable], Callable]) -> None:
        self.modules, self.make = modules, make
        self.saved: dict[str, object] = {}
        self.patched: list[str] = []

    def __enter__(self) -> None:
        try:
            for name, module in self.modules.items():
                if "forward" in module.__dict__:
                    self.saved[name] = module.__dict__["forward"]
                module.forward = self.make(name, module.forward)
                self.patched.append(name)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        for name in self.patched:
            module = self.modules[name]
            del module.forward
            if name in self.saved:
                module.forward = self.saved[name]
        self.patched.clear()


def _rerun(model: nn.Module, x: torch.Tensor, target: str, edited: torch.Tensor,
           reuse: dict[tuple[str, int], tuple[torch.Tensor, Counter[str]]]) -> tuple[object, Counter]:
    """One batched pass with the target's output set to ``edited`` and ``reuse`` standing in."""
    n = edited.shape[0]
    counters: Counter[str] = Counter()
    names = {name for name, _ in reuse} | {target}
    modules = {name: model.get_submodule(name) for name in names}

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
                             f"{one_line(exc, with_type=True, limit=160)}") from exc
    if not torch.is_tensor(out) or tuple(out.shape) != (n, classes):
        raise ModelLoadError(f"{model_name} with {target} edited returned "
                             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}"
                             f" for {n} images, expected ({n}, {classes}) logits")
    return out
