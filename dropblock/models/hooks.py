"""Editing one module's output in any model, N edits at a time, as a forward hook would.

A clean pass runs the model once on the image and records the calls of the target, its
ancestors and their children (:class:`~dropblock.models.trace.CallRecorder`). When the target
starts, the outermost finished calls inside its ancestors that returned a (1, C, H, W) map can
stand in for the prefix in later passes: with their map, when it is still alive and not edited
in place since, or with a zero placeholder, when the model has dropped it. The pass holds only
weak references until then, so it frees memory as a plain forward pass does, and
:mod:`dropblock.models.dataflow` checks that nothing the rest of the pass reads was computed from
a dropped map; where something is, the pass is run again holding every map.

Each batch of N edited maps then reruns the model on N copies of the image (the batch dimension
of a stride-0 view) with the target's ``forward`` replaced by "return the edited maps" and each
standing-in call's ``forward`` by "return its map", so the prefix is not computed again; the
code around those calls runs as written. If that rerun does not call the modules as the clean
pass did, or raises, the batch is run again with only the target replaced (the whole prefix
computed N times), which is exact for any model. Either way row i is what a forward hook on the
target returning ``edits[i](output)`` gives, up to the last float bits of batched kernels.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from dropblock.errors import one_line

from .dataflow import Flow, Node, needed
from .errors import ModelLoadError
from .layers import check_logits, not_a_map, trace_model
from .trace import Call, CallRecorder, PatchedForwards, is_map

Reuse = dict[tuple[str, int], tuple[torch.Tensor, Counter[str] | None]]


@dataclass
class CleanPass:
    """The clean pass's results.

    Attributes:
        logits: (1, K) output.
        feature: (1, C, H, W) copy of the target's output.
        reuse: (module name, call index) -> (the (1, C, H, W) map it stands in with, calls
            nested inside it by module name, or None for none).
        placeholders: the keys of ``reuse`` that stand in with a zero placeholder.
        totals: calls per module name in the whole pass.
        modules: the recorded modules by name.
    """

    logits: torch.Tensor
    feature: torch.Tensor
    reuse: Reuse
    placeholders: frozenset[tuple[str, int]]
    totals: Counter[str]
    modules: dict[str, nn.Module]
    _batched: dict[int, Reuse] = field(default_factory=dict, repr=False)

    def batched(self, n: int) -> Reuse:
        """``reuse`` with each map expanded to a batch of ``n`` (stride 0; made once per n)."""
        if n not in self._batched:
            self._batched[n] = {key: (out.expand(n, *out.shape[1:]), nested)
                                for key, (out, nested) in self.reuse.items()}
        return self._batched[n]


@dataclass(slots=True)
class _Map:
    """A finished call's (1, C, H, W) output: a weak reference (plus the map itself while held),
    its version counter at return (in-place edits bump it), and its dtype and device."""

    ref: weakref.ref
    held: torch.Tensor | None
    version: int
    dtype: torch.dtype
    device: torch.device


def _watch(model: nn.Module, target: str) -> tuple[dict[str, nn.Module], set[str]]:
    """(the modules worth recording by name, the target's ancestors' names). Recorded: the
    target, its ancestors, and their children (the children of a ModuleList/ModuleDict, which
    is never called itself, count as its parent's)."""
    parts = target.split(".")
    ancestors = {".".join(parts[:i]) for i in range(len(parts))}
    watch = {name: model.get_submodule(name) for name in (*ancestors, target)}
    todo = [(name, watch[name]) for name in ancestors]
    while todo:
        name, module = todo.pop()
        for child, sub in module.named_children():
            full = f"{name}.{child}" if name else child
            watch[full] = sub
            if isinstance(sub, (nn.ModuleList, nn.ModuleDict)):
                todo.append((full, sub))
    return watch, ancestors


class _Recording:
    """One clean pass's state, driven by the recorder's ``on_start``/``on_end``.

    Phases: ``prefix`` (until the target starts: glue logged, maps referenced), ``target``,
    ``after`` (from the target's return to the next recorded event: glue still logged, then
    the check), ``done``. ``hold_all`` holds every map (no placeholders, no check).
    """

    def __init__(self, target: str, ancestors: set[str], hold_all: bool) -> None:
        self.target, self.ancestors, self.hold_all = target, ancestors, hold_all
        self.rec: CallRecorder | None = None
        self.flow = Flow()
        self.nodes: dict[Call, Node] = {}
        self.maps: dict[Call, _Map] = {}
        self.absorbed: dict[Call, Call] = {}
        self.last: tuple[Call, int] | None = None  # the last call that returned a map, its id
        self.taker: tuple[Call, Call] | None = None  # (that call, the call right after it)
        self.phase = "prefix"
        self.reuse: dict[Call, torch.Tensor] = {}
        self.placeholders: set[Call] = set()
        self.versions: dict[Call, int] = {}
        self.zeros: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self.feature: torch.Tensor | None = None
        self.failed = False

    def on_start(self, call: Call, args: tuple, kwargs: dict) -> None:
        flow = self.flow
        flow.off()
        if self.phase == "prefix":
            last, self.last = self.last, None
            if last is not None and last[1] not in flow.read:
                self.taker = (last[0], call)  # nothing read its map before this call
            self.nodes[call] = Node(flow.nodes(args, kwargs), call)
            if call.name == self.target and call.index == 0:
                self._plan()
                self.phase = "target"
            elif call.name in self.ancestors:
                flow.on()
        elif self.phase == "after":
            self.check()

    def on_end(self, call: Call, output: object) -> None:
        self.flow.off()
        if self.phase == "prefix":
            self._ended(call, output)
            stack = self.rec.stack
            if stack and stack[-1].name in self.ancestors:
                self.flow.on()
        elif self.phase == "target" and call.name == self.target and call.index == 0:
            if is_map(output):
                self.feature = output.clone()
            self.phase = "after"
            self.flow.on()
        elif self.phase == "after":
            self.check()

    def _ended(self, call: Call, output: object) -> None:
        taker, self.taker = self.taker, None
        self.flow.made(output, self.nodes.pop(call))
        if not is_map(output) or output.is_inference():
            return
        if (taker is not None and taker[1] is call and taker[0] in self.maps
                and output is self.maps[taker[0]].ref()):
            self.absorbed[taker[0]] = call  # it edited that map in place and returned it
        self.maps[call] = _Map(weakref.ref(output), output if self.hold_all else None,
                               output._version, output.dtype, output.device)
        if self.hold_all:
            for inner in call.descendants():  # only the outermost maps are needed
                self.maps.pop(inner, None)
        self.last = (call, id(output))
        self.flow.read.clear()

    def _placeholder(self, shape: tuple[int, ...], dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor:
        """Zeros of ``shape`` that take no memory (every stride 0)."""
        if (dtype, device) not in self.zeros:
            self.zeros[dtype, device] = torch.zeros((), dtype=dtype, device=device)
        return self.zeros[dtype, device].expand(shape)

    def _alive_and_unedited(self, call: Call, out: torch.Tensor) -> bool:
        """Its map is as it returned it, or as the in-place call that absorbed it left it
        (``bn`` then ``ReLU(inplace=True)``: both stand in with the ReLU's map)."""
        if out._version == self.maps[call].version:
            return True
        taker = self.maps.get(self.absorbed.get(call))
        return taker is not None and taker.ref() is out and out._version == taker.version

    def _plan(self) -> None:
        """At the target's start: which calls stand in, and with what."""
        todo = [child for ancestor in self.rec.stack[:-1] for child in ancestor.children
                if child.done]
        while todo:
            call = todo.pop()
            found = self.maps.get(call)
            out = None if found is None else found.ref()
            if found is not None and out is None:
                self.reuse[call] = self._placeholder(call.shape, found.dtype, found.device)
                self.placeholders.add(call)
            elif out is not None and self._alive_and_unedited(call, out):
                self.reuse[call] = out
                self.versions[call] = out._version
            else:
                todo.extend(call.children)
        self.maps.clear()
        self.nodes.clear()

    def check(self) -> None:
        """After the target: keep the maps that the rest of the pass can read, or fail."""
        self.phase = "done"
        self.flow.off()
        if self.hold_all:
            return
        saved = set(self.reuse) - self.placeholders
        lost = self.placeholders | {d for c in self.reuse if c.children for d in c.descendants()}
        roots = [*self.flow.roots, *(n for n in self.flow.alive() if n.call not in saved)]
        used = needed(roots, saved, lost)
        self.flow = Flow()  # the graph is no longer needed
        if used is None:
            self.failed = True
            return
        # from here on only the calls of the standing-in modules and the target are counted
        self.rec.restore({c.name for c in self.reuse} | {self.target})
        refs = {}
        for call in saved - used:  # still read later only if the model still holds it
            out = self.reuse[call]
            refs[call] = weakref.ref(out)
            self.reuse[call] = self._placeholder(call.shape, out.dtype, out.device)
        out = None
        for call, ref in refs.items():
            out = ref()
            if out is None:
                self.placeholders.add(call)
                del self.versions[call]
            else:
                self.reuse[call] = out

    def edited_since(self) -> set[Call]:
        """The held maps edited in place after the target started."""
        return {call for call, version in self.versions.items()
                if self.reuse[call]._version != version}


def _record(model: nn.Module, x: torch.Tensor, target: str, model_name: str,
            hold_all: bool) -> tuple[object, _Recording, CallRecorder]:
    watch, ancestors = _watch(model, target)
    state = _Recording(target, ancestors, hold_all)
    with CallRecorder(model, watch, on_start=state.on_start, on_end=state.on_end) as rec:
        state.rec = rec
        try:
            logits = model(x)
        except Exception as exc:
            raise ModelLoadError(f"a forward pass of {model_name} failed: "
                                 f"{one_line(exc, with_type=True, limit=160)}") from exc
        finally:
            state.flow.off()
    if state.phase == "after":
        state.check()
    return logits, state, rec


def clean_pass(model: nn.Module, x: torch.Tensor, target: str, model_name: str) -> CleanPass:
    """Run ``model`` (eval mode, no grad: the caller's job) on ``x`` (1, 3, H, W), recording
    the calls of the target, its ancestors and their children (see :func:`_watch`); once, or
    twice when a value read after the target was computed from a map the model dropped.

    Raises:
        LayerError: the target does not run exactly once or its output is not a (1, C, H, W) map.
        ModelLoadError: the forward pass raised, or its output is not (1, classes) logits.
    """
    logits, state, rec = _record(model, x, target, model_name, hold_all=False)
    if rec.counts[target] == 1 and state.feature is not None and (
            state.failed or state.edited_since()):
        logits, state, rec = _record(model, x, target, model_name, hold_all=True)
    if rec.counts[target] != 1 or state.feature is None:
        raise not_a_map(target, trace_model(model, x.shape[-1]), model_name)
    check_logits(tuple(logits.shape) if torch.is_tensor(logits) else None,
                 type(logits).__name__, model_name)
    edited = state.edited_since()  # a map edited in place after the target ran stands in no more
    reuse = {(c.name, c.index): (out, Counter(d.name for d in c.descendants()) if c.children
                                 else None) for c, out in state.reuse.items() if c not in edited}
    placeholders = frozenset((c.name, c.index) for c in state.placeholders)
    modules = {c.name: c.module for c in rec.calls}
    return CleanPass(logits, state.feature, reuse, placeholders, rec.counts.copy(), modules)


def _rerun(model: nn.Module, x: torch.Tensor, target: str, edited: torch.Tensor, reuse: Reuse,
           modules: dict[str, nn.Module]) -> tuple[object, Counter]:
    """One batched pass with the target's output set to ``edited`` and ``reuse`` (its maps
    already batched) standing in."""
    n = edited.shape[0]
    names = {name for name, _ in reuse} | {target}
    counters: Counter[str] = Counter(dict.fromkeys(names, 0))  # no __missing__ on a first call

    def make(name: str, forward: Callable) -> Callable:
        def replaced(*args: object, **kwargs: object) -> object:
            index = counters[name]
            counters[name] = index + 1
            if name == target and index == 0:
                return edited
            saved = reuse.get((name, index))
            if saved is None:
                return forward(*args, **kwargs)
            if saved[1]:
                counters.update(saved[1])
            return saved[0]
        return replaced

    with PatchedForwards({name: modules[name] for name in names}, make):
        out = model(x.expand(n, *x.shape[1:]) if reuse else x.repeat(n, 1, 1, 1))
    return out, counters


def edited_logits(model: nn.Module, x: torch.Tensor, target: str, edited: torch.Tensor,
                  clean: CleanPass, model_name: str) -> torch.Tensor:
    """(N, K) logits with the target's output replaced by ``edited`` (N, C, H, W)."""
    n, classes = edited.shape[0], clean.logits.shape[1]
    if clean.reuse:
        try:
            out, counters = _rerun(model, x, target, edited, clean.batched(n), clean.modules)
            names = {name for name, _ in clean.reuse} | {target}
            if (torch.is_tensor(out) and tuple(out.shape) == (n, classes)
                    and all(counters[name] == clean.totals[name] for name in names)):
                return out
        except Exception:  # e.g. an in-place op on a reused map: rerun without reuse
            pass
    try:
        out, _ = _rerun(model, x, target, edited, {}, clean.modules)
    except Exception as exc:
        raise ModelLoadError(f"a forward pass of {model_name} with {target} edited failed: "
                             f"{one_line(exc, with_type=True, limit=160)}") from exc
    if not torch.is_tensor(out) or tuple(out.shape) != (n, classes):
        raise ModelLoadError(f"{model_name} with {target} edited returned "
                             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}"
                             f" for {n} images, expected ({n}, {classes}) logits")
    return out
