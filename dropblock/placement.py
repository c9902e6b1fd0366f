"""Putting DropBlock into any model for training: :func:`add_dropblock`.

Each DropBlock goes *after* a named module: the module's output is replaced by
``dropblock(output)`` through a forward hook, and the DropBlock is registered as the module's
child ``dropblock`` (so ``train()``/``eval()``, ``.to()`` and ``state_dict()`` reach it). An
``nn.Sequential`` gets the DropBlock appended instead (a Sequential runs all its children). An
empty slot, an attribute that is None such as ``layer3.1.downsample`` in a torchvision or timm
ResNet block, gets the DropBlock itself: the block then applies it to its identity shortcut.

The paper's placement, ResNet-50 groups 3 and 4 after every convolution's BatchNorm and on every
skip connection::

    add_dropblock(model, ["layer[34].*.bn[123]", "layer[34].*.downsample"], p=0.1, block_size=7)

Names are ``named_modules`` names or fnmatch globs (``*`` also matches dots). Empty slots are
matched only by a literal last part (``*.downsample``, not ``layer3.1.*``). A pattern that matches
the root (``""`` or ``"*"``) is refused. Each DropBlock checks what reaches it at every call: a
module whose output is not one (N, C, H, W) floating tensor gives a ValueError naming it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from dropblock.errors import UsageError
from dropblock._checks import SEED_MAX, check_seed
from dropblock._engine import check_input
from dropblock.modules import DropBlock2d, ScheduledDropBlock2d

CHILD = "dropblock"
_WILD = set("*?[")


_NOT_ONE_TENSOR = (nn.RNNBase, nn.MultiheadAttention)
"""Modules known to return a tuple: refused when the DropBlock is inserted, not at the first call."""


def _apply_dropblock(module: nn.Module, args: tuple, output: Any) -> Any:
    """Forward hook: the module's output through its ``dropblock`` child."""
    return getattr(module, CHILD)(output)


def _check_what_reaches(where: str, block: nn.Module, args: tuple) -> None:
    """Forward pre-hook of an inserted DropBlock: one (N, C, H, W) floating tensor must reach it, else a
    ValueError naming the module it was put ``where`` (a deep torch error otherwise, or none at all)."""
    x = args[0] if len(args) == 1 else args
    if isinstance(x, torch.fx.Proxy):  # a symbolic trace: nothing to check yet
        return
    try:
        check_input(x)
    except ValueError as exc:
        raise UsageError(f"the DropBlock that add_dropblock put {where} cannot take what reaches it: {exc}; "
                         f"pick a module that returns one (N, C, H, W) tensor") from None


def _slots(model: nn.Module) -> list[str]:
    """``parent.attr`` for every attribute or registered child of a module that is None."""
    out = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        empty = [k for k, v in vars(module).items() if v is None and not k.startswith("_")]
        empty += [k for k, v in module._modules.items() if v is None]
        out.extend(prefix + k for k in dict.fromkeys(empty))
    return out


def _matches(pattern: str, names: list[str], slots: list[str]) -> list[str]:
    if not _WILD & set(pattern):
        return [pattern] if pattern in names or pattern in slots else []
    found = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not _WILD & set(pattern.rsplit(".", 1)[-1]):
        found += [s for s in slots if fnmatch.fnmatchcase(s, pattern)]
    return found


def resolve_targets(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """The module names and empty slots that ``layers`` (names or globs) pick, in model order.

    Raises:
        UnknownNameError: a name or glob that picks nothing (close matches first).
        ValueError: no layers given.
    """
    from dropblock.models.errors import UnknownNameError

    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise UsageError("add_dropblock needs at least one layer name or glob")
    for pattern in patterns:
        if fnmatch.fnmatchcase("", str(pattern)):
            raise UsageError(f"layer pattern {str(pattern)!r} matches the root module (the whole model): a DropBlock "
                             f"goes after modules inside it; name those, e.g. 'layer3.*.bn2' (model.named_modules())")
    names = [n for n, _ in model.named_modules() if n]
    slots = _slots(model)
    picked: set[str] = set()
    for pattern in patterns:
        found = _matches(str(pattern), names, slots)
        if not found:
            raise UnknownNameError("layer", str(pattern), names,
                                   hint=f"{len(names)} modules in all: model.named_modules()")
        picked.update(found)
    order = {n: i for i, n in enumerate(names + slots)}
    return sorted(picked, key=order.__getitem__)


def _make(p: float, block_size: int, schedule_steps: int | None, options: dict[str, Any],
          index: int) -> DropBlock2d:
    options = dict(options)
    if options.get("seed") is not None:
        options["seed"] = int(options["seed"]) + index
    if schedule_steps is None:
        return DropBlock2d(p, block_size, **options)
    return ScheduledDropBlock2d(p, block_size, schedule_steps, **options)


def _slot(model: nn.Module, target: str) -> tuple[nn.Module, str, nn.Module | None]:
    """(parent, attribute, what is there now) for a target name."""
    parent_name, _, attr = target.rpartition(".")
    parent = model.get_submodule(parent_name)
    return parent, attr, getattr(parent, attr)


def _refusal(model: nn.Module, target: str) -> str | None:
    """Why no DropBlock can go at ``target``, or None when one can."""
    current = _slot(model, target)[2]
    if current is None:
        return None
    if type(current).forward is nn.Sequential.forward:
        ends_with_one = len(current) and isinstance(current[-1], DropBlock2d)
        return f"{target} already ends with a DropBlock2d" if ends_with_one else None
    if isinstance(current, (nn.ModuleList, nn.ModuleDict)):
        return (f"cannot put a DropBlock after {target}: a {type(current).__name__} "
                f"runs its children itself; pick a module inside or after it")
    if isinstance(current, _NOT_ONE_TENSOR):
        return (f"cannot put a DropBlock after {target}: a {type(current).__name__} returns a tuple, "
                f"not one tensor; pick a module that returns one (N, C, H, W) tensor")
    if hasattr(current, CHILD):
        return f"{target} already has a {CHILD!r} attribute (a DropBlock after it?)"
    return None


def _insert(model: nn.Module, target: str, block: DropBlock2d) -> None:
    """Put ``block`` at ``target`` (a target ``_refusal`` passed)."""
    parent, attr, current = _slot(model, target)
    block.train((parent if current is None else current).training)
    where = f"in the empty slot {target!r}" if current is None else f"after {target!r}"
    block.register_forward_pre_hook(partial(_check_what_reaches, where))
    if current is None:
        if attr in parent.__dict__:
            del parent.__dict__[attr]
        parent.add_module(attr, block)
    elif type(current).forward is nn.Sequential.forward:
        current.append(block)
    else:
        current.add_module(CHILD, block)
        current.register_forward_hook(_apply_dropblock)


def add_dropblock(model: nn.Module, layers: str | Sequence[str], p: float = 0.1,
                  block_size: int = 7, schedule_steps: int | None = None,
                  **options: Any) -> list[DropBlock2d]:
    """Put a DropBlock after each module that ``layers`` names, in place; returns them.

    Args:
        model: any ``nn.Module``; it stays one (state_dict, eval/train, ``torch.compile``).
        layers: ``named_modules`` names, fnmatch globs, or empty slots (see module docstring).
        p: drop rate (the paper's 1 - keep_prob), in [0, 1).
        block_size: block side in feature-map units.
        schedule_steps: a :class:`~dropblock.modules.ScheduledDropBlock2d` whose keep_prob falls
            linearly from 1 to ``1 - p`` over this many ``step()`` calls; None: a fixed
            :class:`~dropblock.modules.DropBlock2d`.
        **options: passed to each DropBlock (``gamma``, ``rescale``, ``shared_channels``,
            ``generator``, ``start_keep_prob`` ...); ``seed=s`` gives the i-th one seed s + i.

    Returns:
        The inserted modules in model order (step their schedules once per training step).

    Raises:
        UnknownNameError: a name or glob that picks nothing.
        ValueError: bad p/block_size/options, a pattern matching the root, a module known to return
            a tuple, or a module that already has a DropBlock after it. At a forward pass: a module
            whose output is not one (N, C, H, W) floating tensor (the message names it).
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    targets = resolve_targets(model, layers)
    if options.get("seed") is not None and check_seed(options["seed"]) + len(targets) - 1 > SEED_MAX:
        raise UsageError(f"seed must be at most 2**64 - {len(targets)} for {len(targets)} DropBlocks (the i-th "
                         f"gets seed + i), got {options['seed']!r}")
    blocks = [_make(p, block_size, schedule_steps, options, i) for i in range(len(targets))]
    for why in filter(None, (_refusal(model, target) for target in targets)):
        raise UsageError(why)  # before anything is inserted: the model is left as it was
    for target, block in zip(targets, blocks):
        _insert(model, target, block)
    return blocks
