"""Recording which modules of a model run during one forward pass: order, nesting, outputs.

:class:`CallRecorder` wraps ``forward`` of every module (the root too) and logs one
:class:`Call` per module call, in the order the calls start. It is how the layer tables see every
module's output shape, and how :mod:`dropblock.models.hooks` knows which finished calls it can
reuse when it reruns a model with one layer's output edited.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(eq=False, slots=True, init=False)
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
    """

    name: str
    module: nn.Module
    index: int
    parent: Call | None
    children: list[Call]
    done: bool
    shape: tuple[int, ...] | None
    output_type: str

    def __init__(self, name: str, module: nn.Module, index: int, parent: Call | None) -> None:
        # written out: the generated one calls a default factory, on every call of every module
        self.name, self.module, self.index, self.parent = name, module, index, parent
        self.children, self.done, self.shape, self.output_type = [], False, None, ""

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


class PatchedForwards:
    """Context manager: replaces ``forward`` of the named modules by ``make(name, forward)``;
    restores it on exit.

    It writes the instance ``__dict__``, which ``nn.Module.__call__`` reads first, directly:
    ``nn.Module.__setattr__`` only adds checks that a function never needs, and a module with
    no hooks keeps ``__call__``'s fast path.
    """

    def __init__(self, modules: dict[str, nn.Module],
                 make: Callable[[str, Callable], Callable]) -> None:
        self.modules, self.make = modules, make
        self.saved: dict[str, object] = {}
        self.patched: list[str] = []

    def __enter__(self) -> PatchedForwards:
        seen: set[int] = set()
        try:
            for name, module in self.modules.items():
                if id(module) in seen:
                    continue  # one module under two names: patched once, under the first
                seen.add(id(module))
                if "forward" in module.__dict__:
                    self.saved[name] = module.__dict__["forward"]
                module.__dict__["forward"] = self.make(name, module.forward)
                self.patched.append(name)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore(set())

    def restore(self, keep: set[str]) -> None:
        """Put back the original ``forward`` of every patched module not named in ``keep``
        (a call that is running finishes in the patched one)."""
        still = []
        for name in self.patched:
            if name in keep:
                still.append(name)
                continue
            module = self.modules[name]
            del module.__dict__["forward"]
            if name in self.saved:
                module.__dict__["forward"] = self.saved[name]
        self.patched = still


class CallRecorder(PatchedForwards):
    """Context manager: wraps ``forward`` of every module of ``model`` and logs its calls.

    It keeps no outputs: ``on_end`` sees each one, and whoever needs it keeps it. A call is a
    call of ``forward``, as :class:`PatchedForwards` replaces it; forward hooks of the model's
    own run outside it.

    Args:
        model: any module.
        modules: record only these modules, by ``named_modules`` name (None: all). Calls of
            other modules go unrecorded; a recorded call's parent is then the innermost
            recorded call around it.
        on_start: called with each call and its positional and keyword arguments as it starts
            (the call is already in ``calls`` and ``stack``).
        on_end: called with each call and its output as it returns (``shape`` filled in; the
            call is already off ``stack``). Not called for a call that raises.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module] | None = None,
                 on_start: Callable[[Call, tuple, dict], None] | None = None,
                 on_end: Callable[[Call, object], None] | None = None) -> None:
        super().__init__(dict(model.named_modules()) if modules is None else modules,
                         self._recorded)
        self.on_start, self.on_end = on_start, on_end
        self.calls: list[Call] = []
        self.stack: list[Call] = []
        self.counts: Counter[str] = Counter()

    def _recorded(self, name: str, forward: Callable) -> Callable:
        # closure locals, not attributes: this runs around every call of every module
        module, stack, counts, calls = self.modules[name], self.stack, self.counts, self.calls
        on_start, on_end = self.on_start, self.on_end

        def recorded(*args: object, **kwargs: object) -> object:
            parent = stack[-1] if stack else None
            index = counts.get(name, 0)  # not counts[name]: Counter's __missing__ is Python
            call = Call(name, module, index, parent)
            counts[name] = index + 1
            if parent is not None:
                parent.children.append(call)
            calls.append(call)
            stack.append(call)
            if on_start is not None:
                on_start(call, args, kwargs)
            try:
                output = forward(*args, **kwargs)
            finally:
                stack.pop()
            call.done = True
            call.output_type = type(output).__name__
            if isinstance(output, torch.Tensor):
                call.shape = tuple(output.shape)
            if on_end is not None:
                on_end(call, output)
            return output
        return recorded


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
