"""The clean pass of :mod:`dropblock.models.hooks`: one forward pass that finds what can stand in
for the prefix when the model runs again with the target's output edited.

:class:`CleanRecorder` records the calls of the target, its ancestors and their children
(:func:`watch_modules`). When the target starts, the outermost finished calls inside its
ancestors that returned a (1, C, H, W) map can stand in for the prefix: with their map, when it
is still alive and not edited in place since, or with a zero placeholder, when the model has
dropped it. The pass holds only weak references until then, so it frees memory as a plain
forward pass does, and :mod:`dropblock.models.dataflow` checks, just after the target returns,
that nothing the rest of the pass reads was computed from a dropped map (``failed`` when
something is: the caller then records again with ``hold_all``, which holds every map).

The wrapper around each call does the recording inline until the target starts: on a model
such as EfficientNet-Lite0 it runs around two dozen times a pass, after kernels that leave the
CPU's caches cold, so each Python call it saves is worth several plain ones.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

from .dataflow import Flow, Node, needed
from .trace import Call, CallRecorder, is_map

PREFIX, TARGET, AFTER, DONE = range(4)  # the phases of a pass
MapEntry = tuple[weakref.ref, int, torch.dtype, torch.device]  # a map, its version at return


def watch_modules(model: nn.Module, target: str) -> tuple[dict[str, nn.Module], set[str]]:
    """(the modules worth recording by name, the target's ancestors' names). Recorded: the
    target, its ancestors, and their children (the children of a ModuleList/ModuleDict, which
    is never called itself, count as its parent's)."""
    parts = target.split(".")
    ancestors = {".".join(parts[:i]) for i in range(len(parts))}
    watch = {name: model.get_submodule(name) for name in (*ancestors, target)}
    todo = [(name, watch[name]) for name in ancestors]
    while todo:
        name, module = todo.pop()
        prefix = name + "." if name else ""
        for child, sub in module._modules.items():  # named_children(), without a generator
            if sub is not None:
                watch[prefix + child] = sub
                if isinstance(sub, (nn.ModuleList, nn.ModuleDict)):
                    todo.append((prefix + child, sub))
    return watch, ancestors


class CleanRecorder(CallRecorder):
    """Context manager: records one clean pass of ``model`` for editing ``target``.

    Phases: ``PREFIX`` (until the target starts: glue logged, maps referenced), ``TARGET``,
    ``AFTER`` (from the target's return to the next recorded event: glue still logged, then
    :meth:`check`), ``DONE`` (calls only counted). ``hold_all`` holds every map (no
    placeholders, no check). After the pass: ``feature`` (a copy of the target's output, None
    unless a (1, C, H, W) map), ``reuse`` (call -> its map, or a 0-dim zero for a placeholder),
    ``placeholders``, ``failed``, and ``counts`` (calls by module name).
    """

    def __init__(self, model: nn.Module, target: str, hold_all: bool) -> None:
        watch, self.ancestors = watch_modules(model, target)
        super().__init__(model, watch)
        self.target, self.hold_all = target, hold_all
        self.flow = Flow()
        self.maps: dict[Call, MapEntry] = {}
        self.held: dict[Call, torch.Tensor] = {}  # with hold_all: the outermost maps
        self.absorbed: dict[Call, Call] = {}
        self.last: tuple[Call, int] | None = None  # the last call that returned a map, its id
        self.taker: tuple[Call, Call] | None = None  # (that call, the call right after it)
        self.phase = PREFIX
        self.top: list[Call] = []  # the calls with no recorded call around them
        self.reuse: dict[Call, torch.Tensor] = {}
        self.placeholders: set[Call] = set()
        self.versions: dict[Call, int] = {}
        self.zeros: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self.feature: torch.Tensor | None = None
        self.failed = False

    def _recorded(self, name: str, forward: Callable) -> Callable:
        module, flow, is_target = self.modules[name], self.flow, name == self.target

        def recorded(*args: object, **kwargs: object) -> object:
            if self.phase != PREFIX:
                return self._later(name, forward, args, kwargs)
            if flow.active:  # logging its parent's glue
                flow.off()
            stack, counts = self.stack, self.counts
            parent = stack[-1] if stack else None
            index = counts.get(name, 0)
            counts[name] = index + 1
            call = Call(name, module, index, parent)
            (self.top if parent is None else parent.children).append(call)
            last = self.last
            if last is not None:
                self.last = None
                if last[1] not in flow.read:
                    self.taker = (last[0], call)  # nothing read its map before this call
            if is_target and index == 0:
                return self._target(call, forward, args, kwargs)
            node = Node(flow.nodes(args, kwargs), call)
            if name in self.ancestors:
                flow.on()
            stack.append(call)
            try:
                output = forward(*args, **kwargs)
            finally:
                stack.pop()
            call.done = True
            if self.phase != PREFIX:  # an ancestor of the target returns
                if self.phase == AFTER:
                    self.check()
                return output
            if flow.active:  # logging its own glue
                flow.off()
            taker, self.taker = self.taker, None
            flow.made(output, node)
            if isinstance(output, torch.Tensor):
                shape = output.shape
                if len(shape) == 4 and shape[0] == 1:
                    call.shape = tuple(shape)
                    self._map(call, output, taker)
            if parent is None or parent.name in self.ancestors:  # no parent: the root's glue
                flow.on()
            return output
        return recorded

    def _later(self, name: str, forward: Callable, args: tuple, kwargs: dict) -> object:
        """A call after the target started: counted, and the first one ends ``AFTER``."""
        if self.phase == AFTER:
            self.check()
        self.counts[name] = self.counts.get(name, 0) + 1
        output = forward(*args, **kwargs)
        if self.phase == AFTER:
            self.check()
        return output

    def _target(self, call: Call, forward: Callable, args: tuple, kwargs: dict) -> object:
        self._plan()
        self.phase = TARGET
        output = forward(*args, **kwargs)
        call.done = True
        if is_map(output):
            self.feature = output.clone()
        self.phase = AFTER
        self.flow.on()
        return output

    def _map(self, call: Call, output: torch.Tensor, taker: tuple[Call, Call] | None) -> None:
        """``call`` returned the (1, C, H, W) map ``output``."""
        try:
            version = output._version
        except RuntimeError:  # an inference tensor has no version counter: it never stands in
            return
        maps = self.maps
        if (taker is not None and taker[1] is call and taker[0] in maps
                and output is maps[taker[0]][0]()):
            self.absorbed[taker[0]] = call  # it edited that map in place and returned it
        maps[call] = (weakref.ref(output), version, output.dtype, output.device)
        if self.hold_all:
            self.held[call] = output
            for inner in call.descendants():  # only the outermost maps are needed
                maps.pop(inner, None)
                self.held.pop(inner, None)
        self.last = (call, id(output))
        self.flow.read.clear()

    def _zero(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A 0-dim zero, what a placeholder holds until the rerun expands it to the map's shape."""
        zero = self.zeros.get((dtype, device))
        if zero is None:
            zero = self.zeros[dtype, device] = torch.zeros((), dtype=dtype, device=device)
        return zero

    def _alive_and_unedited(self, call: Call, out: torch.Tensor) -> bool:
        """Its map is as it returned it, or as the in-place call that absorbed it left it
        (``bn`` then ``ReLU(inplace=True)``: both stand in with the ReLU's map)."""
        if out._version == self.maps[call][1]:
            return True
        taker = self.maps.get(self.absorbed.get(call))
        return taker is not None and taker[0]() is out and out._version == taker[1]

    def _plan(self) -> None:
        """At the target's start: which calls stand in, and with what."""
        todo = [child for ancestor in self.stack for child in ancestor.children if child.done]
        todo.extend(call for call in self.top if call.done)
        maps, reuse = self.maps, self.reuse
        while todo:
            call = todo.pop()
            found = maps.get(call)
            out = None if found is None else found[0]()
            if found is not None and out is None:
                reuse[call] = self._zero(found[2], found[3])
                self.placeholders.add(call)
            elif out is not None and self._alive_and_unedited(call, out):
                reuse[call] = out
                self.versions[call] = out._version
            else:
                todo.extend(call.children)
        self.maps.clear()
        self.held.clear()

    def check(self) -> None:
        """After the target: keep the maps that the rest of the pass can read, or fail."""
        self.phase = DONE
        flow = self.flow
        flow.off()
        if self.hold_all:
            return
        saved = set(self.reuse) - self.placeholders
        lost = self.placeholders | {d for c in self.reuse if c.children for d in c.descendants()}
        roots = [*flow.roots, *(n for n in flow.alive() if n.call not in saved)]
        used = needed(roots, saved, lost)
        flow.values.clear()  # the graph is no longer needed
        flow.roots.clear()
        if used is None:
            self.failed = True
            return
        # from here on only the calls of the standing-in modules and the target are counted
        self.restore({c.name for c in self.reuse} | {self.target})
        refs = {}
        for call in saved - used:  # still read later only if the model still holds it
            out = self.reuse[call]
            refs[call] = weakref.ref(out)
            self.reuse[call] = self._zero(out.dtype, out.device)
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
