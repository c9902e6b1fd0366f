"""Recording which modules of a model run during one forward pass: order, nesting, outputs.

:class:`CallRecorder` puts a forward pre-hook and a forward hook on every module (the root too)
and logs one :class:`Call` per module call, in the order the calls start. It is how the layer
tables see every module's output shape, and how :mod:`dropblock.models.hooks` knows which
finished calls it can reuse when it reruns a model with one layer's output edited.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(eq=False)
class Call:
    """One call of one module.

    Attributes:
        name: the module's ``named_modules`` name (``""`` for the root).
        module: the module.
        index: how many calls of this module came before this one (0 for the first).
        parent: the call that was running when this one started (None for the outermost).
        children: the calls started directly inside this one, in order.
        done: the call has returned.
        shape: its output's shape when the output is a tensor, else None.
        output_type: the output's type name (``"Tensor"``, ``"tuple"`` ...).
        output: the output itself, kept only while the recorder keeps outputs.
        version: the output tensor's version counter at return (in-place edits bump it).
        absorbed_by: the next recorded call, when it edited this output in place and returned
            it, and no torch op read it in between (set by :mod:`dropblock.models.hooks`).
    """

    name: str
    module: nn.Module
    index: int
    parent: Call | None
    children: list[Call] = field(default_factory=list)
    done: bool = False
    shape: tuple[int, ...] | None = None
    output_type: str = ""
    output: object = None
    version: int | None = None
    absorbed_by: Call | None = None

    def descendants(self) -> list[Call]:
        """Every call nested inside this one."""
        out: list[Call] = []
        stack = list(self.children)
        while stack:
            call = stack.pop()
            out.append(call)
            stack.extend(call.children)
        return out


def is_map(value: object) -> bool:
    """A single-image (1, C, H, W) tensor."""
    return torch.is_tensor(value) and value.ndim == 4 and value.shape[0] == 1


class CallRecorder:
    """Context manager: hooks every module of ``model`` and logs its calls.

    Args:
        model: any module.
        names: hook only these ``named_modules`` names (None: all). Calls of other modules go
            unrecorded; a recorded call's parent is then the innermost recorded call around it.
        keep_outputs: keep references to outputs of calls (dropped again for the children of a
            call that returned a (1, C, H, W) map, so only the outermost such maps stay).
        on_start: called with each call as it starts (already in ``calls`` and ``stack``).
        on_end: called with each call as it returns (``shape``/``output`` filled in).
    """

    def __init__(self, model: nn.Module, keep_outputs: bool = False, names: set[str] | None = None,
                 on_start: Callable[[Call], None] | None = None,
                 on_end: Callable[[Call, object], None] | None = None) -> None:
        self.model = model
        self.names = names
        self.keep_outputs = keep_outputs
        self.on_start, self.on_end = on_start, on_end
        self.calls: list[Call] = []
        self.stack: list[Call] = []
        self.counts: Counter[str] = Counter()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> CallRecorder:
        for name, module in self.model.named_modules():
            if self.names is not None and name not in self.names:
                continue
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post()))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre(self, name: str) -> Callable[[nn.Module, tuple], None]:
        def hook(module: nn.Module, args: tuple) -> None:
            parent = self.stack[-1] if self.stack else None
            call = Call(name, module, self.counts[name], parent)
            self.counts[name] += 1
            if parent is not None:
                parent.children.append(call)
            self.calls.append(call)
            self.stack.append(call)
            if self.on_start is not None:
                self.on_start(call)
        return hook

    def _post(self) -> Callable[[nn.Module, tuple, object], None]:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            while self.stack and self.stack[-1].module is not module:
                self.stack.pop()  # a call that raised inside and was caught by its caller
            if not self.stack:
                return
            call = self.stack.pop()
            call.done = True
            call.output_type = type(output).__name__
            if torch.is_tensor(output):
                call.shape = tuple(output.shape)
                if self.keep_outputs and not output.is_inference():
                    call.output, call.version = output, output._version
            if is_map(call.output):
                _drop_outputs(call.children)
            if self.on_end is not None:
                self.on_end(call, output)
        return hook

    def drop_all_outputs(self) -> None:
        """Forget every kept output and keep no more."""
        self.keep_outputs = False
        for call in self.calls:
            call.output = None


def _drop_outputs(calls: list[Call]) -> None:
    stack = list(calls)
    while stack:
        call = stack.pop()
        call.output = None
        stack.extend(call.children)


def first_outputs(modules: Mapping[str, nn.Module], run: Callable[[], object]) -> dict[str, object]:
    """Call ``run()`` (one forward pass) with a forward hook on each named module: each name's first
    output, in the order the modules first returned. Names whose module did not run are left out."""
    seen: dict[str, object] = {}
    handles = []
    for name, module in modules.items():
        def hook(mod: nn.Module, args: tuple, out: object, name: str = name) -> None:
            seen.setdefault(name, out)

        handles.append(module.register_forward_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen
