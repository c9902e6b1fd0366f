"""What the code between a model's recorded calls computes from their outputs.

:mod:`dropblock.models.hooks` reruns a model with the calls before the edited layer (the target)
standing in with their saved maps. Holding every such map through the clean pass would keep
memory that a plain forward pass frees and reuses (about 10 % of EfficientNet-Lite0's time on a
CPU goes to faulting that memory in again). So the clean pass holds only weak references, and
this module answers what that costs: can the rest of the pass still read a value that was
computed from a map nobody holds any more?

While the code of the target's ancestors runs between recorded calls (the "glue": ``x + y``,
``F.relu(x)``, ``torch.flatten``), :class:`Flow`, a TorchFunctionMode, logs each torch function it
calls: the tensors it read and the tensors it made. With the recorded calls' arguments and
outputs, that is a graph of :class:`Node` s, one per value, that holds no tensor. A value is
*exact* in the rerun when every path back from it ends at the input, a parameter, or a call that
stands in with its saved map; it is not when a path ends at a call that stands in with a
placeholder (its map was freed), or at a call nested inside one that stands in.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch._C import _pop_torch_function_stack, _push_on_torch_function_stack
from torch.overrides import TorchFunctionMode

from .trace import Call

# Functions that read a tensor's metadata, not its values (same for a placeholder).
METADATA = frozenset({
    "shape", "size", "dtype", "ndim", "dim", "ndimension", "numel", "nelement", "device",
    "layout", "is_contiguous", "stride", "storage_offset", "element_size", "requires_grad",
    "is_leaf", "grad_fn", "names", "is_floating_point", "is_complex", "get_device", "is_cuda",
    "is_cpu", "is_sparse", "is_quantized", "is_meta", "is_mkldnn", "is_nested", "data_ptr",
    "__len__", "__hash__", "_version",
})


@dataclass(eq=False, slots=True)
class Node:
    """One value: made by a recorded ``call`` from ``inputs`` (its arguments), or by glue
    (``call`` None) from ``inputs`` (the tensors the function read)."""

    inputs: tuple[Node, ...]
    call: Call | None = None


def _name(func: object) -> str:
    name = getattr(func, "__name__", "")
    return getattr(getattr(func, "__self__", None), "__name__", name) if name == "__get__" else name


def _tensors(values: object) -> list[torch.Tensor]:
    """The tensors in ``values``: a tensor, or tuples, lists and dicts of them (other leaves
    skipped). Plain recursion: this runs on every glue op, where a pytree walk costs more."""
    if isinstance(values, torch.Tensor):
        return [values]
    if isinstance(values, dict):
        values = values.values()
    elif not isinstance(values, (tuple, list)):
        return []
    return [t for value in values for t in _tensors(value)]


class Flow(TorchFunctionMode):
    """Logs the glue while it is on (``on()``/``off()``; a mode, so only torch functions called
    outside any recorded call's own code are seen).

    Attributes:
        roots: values the glue read as numbers (``bool(x)``, ``x.item()``) or wrote in place
            (through a view, a write can reach any tensor): they must be exact in the rerun.
        read: ids of the tensors the glue read since it was last cleared.
    """

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[int, tuple[weakref.ref, Node]] = {}
        self.roots: list[Node] = []
        self.read: set[int] = set()
        self.active = False

    def on(self) -> None:
        if not self.active:
            _push_on_torch_function_stack(self)  # what ``__enter__`` does, without its checks
            self.active = True

    def off(self) -> None:
        if self.active:
            _pop_torch_function_stack()
            self.active = False

    def node(self, tensor: torch.Tensor) -> Node | None:
        """The node of ``tensor``'s current value; None for a value made outside the graph."""
        entry = self.values.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def nodes(self, args: tuple, kwargs: dict) -> tuple[Node, ...]:
        """The nodes of the tensors in a call's arguments (any nesting of tuples, lists and
        dicts; the common call on one tensor takes a short cut)."""
        if not kwargs and len(args) == 1 and isinstance(args[0], torch.Tensor):
            node = self.node(args[0])
            return () if node is None else (node,)
        found = (self.node(t) for t in _tensors((args, kwargs)))
        return tuple(n for n in found if n is not None)

    def made(self, values: object, node: Node) -> None:
        """Record that the tensors in ``values`` now hold ``node``'s value."""
        for t in (values,) if isinstance(values, torch.Tensor) else _tensors(values):
            self.values[id(t)] = (weakref.ref(t), node)

    def alive(self) -> Iterable[Node]:
        """The nodes whose tensors are still alive."""
        return (node for ref, node in self.values.values() if ref() is not None)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        read = _tensors((args, kwargs))
        inputs = tuple(n for n in map(self.node, read) if n is not None)
        out = func(*args, **kwargs)
        self.read.update(map(id, read))
        if not inputs:
            return out  # made from the input, parameters or constants only: exact
        node, made = Node(inputs), _tensors(out)
        if not made:
            if _name(func) not in METADATA:
                self.roots.append(node)  # a number, or __setitem__
            return out
        if "out" in kwargs or any(m is r for m in made for r in read):
            self.roots.append(node)
        self.made(made, node)
        return out


def needed(roots: Iterable[Node], saved: set[Call], lost: set[Call]) -> set[Call] | None:
    """The calls of ``saved`` that the values of ``roots`` come from, or None when one of them
    comes from a call in ``lost`` (standing in with a placeholder, or nested in a call that
    stands in). Any other call runs in the rerun, so its value comes from its arguments'."""
    used: set[Call] = set()
    seen: set[Node] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.call in saved:
            used.add(node.call)
        elif node.call in lost:
            return None
        else:
            todo.extend(node.inputs)
    return used
