"""Editing one module's output in any model, N edits at a time, with one forward hook.

A forward hook on the target returns the N edited maps as a batch of N while the input stays one image,
so the layers before it run once; code after it that combines a batch-1 tensor from before it with the
batch-N one broadcasts (``x + f(x)``), and :class:`BroadcastJoins` expands the batch-1 operands of
``torch.cat``/``torch.stack`` the same way. Code that mixes a batch's rows would make that wrong, so each
(model, layer) is checked once against plain passes; where the widened pass raises, returns other than N
rows or fails the check, the edits run as full passes on an N-row copy of the input (checked the same
way), and failing that one plain pass each. Row i is what a hook returning ``edits[i](output)`` gives, up
to the last float bits of batched kernels.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from dropblock._checks import check_positive_int
from dropblock.errors import UsageError

from .errors import ModelLoadError, why
from .layers import check_logits, eval_mode, layer_path, not_a_map, on_model, trace_model, unknown_layer

Edit = Callable[[torch.Tensor], torch.Tensor]
STRATEGIES = ("widened", "expanded", "single")
_JOINS = {torch.cat: 1, torch.concat: 1, torch.concatenate: 1, torch.stack: 0, torch.hstack: 1,
          torch.dstack: 2}  # join -> the dim it joins along when none is given (stack: a new one)
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> {path: strategy}


@dataclass(frozen=True)
class FeatureBatchRun:
    """One image, one layer, N edits.

    Attributes:
        layer: canonical layer name.
        logits_before: (1, K) logits of the unedited network (K classes); None unless asked for.
        logits_after: (N, K) logits, row i with the layer's output replaced by ``edits[i]``.
        feature_before: (1, C, H, W) the layer's output.
        features_after: (N, C, H, W) the edited maps, or None unless ``keep_features``.
        strategy: how the edits ran, one of :data:`STRATEGIES`.
    """

    layer: str
    logits_before: torch.Tensor | None
    logits_after: torch.Tensor
    feature_before: torch.Tensor
    features_after: torch.Tensor | None
    strategy: str = "widened"


class BroadcastJoins(TorchFunctionMode):
    """Expands the batch-1 operands of a join (cat, stack ...) to ``rows`` rows when another
    operand has ``rows``; joins along the batch dimension are left alone."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        tensors = args[0] if func in _JOINS and args and isinstance(args[0], (list, tuple)) else ()
        if tensors and all(torch.is_tensor(t) and t.ndim >= 2 for t in tensors) \
                and {t.shape[0] for t in tensors} == {1, self.rows}:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", _JOINS[func]))
            if func is torch.stack or dim % tensors[0].ndim != 0:
                args = ([t.expand(self.rows, *t.shape[1:]) if t.shape[0] == 1 else t for t in tensors], *args[1:])
        return func(*args, **kwargs)


class EditShapeError(UsageError):
    """An edit returned something other than a tensor of its input's shape."""


def apply_edit(edit: Edit, feature: torch.Tensor) -> torch.Tensor:
    """``edit`` on a private copy of ``feature``; checks the result's shape."""
    out = edit(feature.clone())
    if not torch.is_tensor(out) or out.shape != feature.shape:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise EditShapeError(f"edit must return a tensor of shape {tuple(feature.shape)}, got {got}")
    return out.to(device=feature.device, dtype=feature.dtype)


@dataclass
class EditedCall:
    """What :func:`edited_output` saw: the target's calls so far, a copy of its first output's first rows
    (or that output itself when it is not a tensor), and the mode it entered."""

    calls: int = 0
    output: object = None
    mode: TorchFunctionMode | None = None


@contextmanager
def edited_output(target: nn.Module, make: Callable[[torch.Tensor], torch.Tensor] | None,
                  widen: Callable[[int], TorchFunctionMode] | None = None, rows: int = 1) -> Iterator[EditedCall]:
    """A forward hook on ``target`` for the ``with`` block: its first output, when a 4-D map, is replaced by
    ``make(output[:rows])`` (None: left as it is), and where that has more rows, ``widen(its rows)`` (e.g.
    :class:`BroadcastJoins`) is on for the rest of the pass. Hook and mode are gone afterwards, whatever
    the block raised."""
    seen = EditedCall()

    def hook(module: nn.Module, args: tuple, out: object) -> object:
        seen.calls += 1
        if seen.calls > 1:
            return None
        seen.output = out[:rows].clone() if torch.is_tensor(out) else out  # safe from in-place ops
        if make is None or not (torch.is_tensor(out) and out.ndim == 4):
            return None
        edited = make(seen.output)
        if widen is not None and edited.shape[0] > rows:
            seen.mode = widen(edited.shape[0])
            seen.mode.__enter__()
        return edited

    handle = target.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()
        if seen.mode is not None:
            seen.mode.__exit__(None, None, None)


@dataclass
class _Job:
    """A forward_many call: the model, its target, the input, the edits. Each edit is called once, on the
    unedited map; every later pass takes the maps it made."""

    net: nn.Module
    path: str
    name: str
    x: torch.Tensor
    edits: list[Edit]
    batch_size: int
    outs: list[torch.Tensor] | None = None  # the edited maps of the last batch, (1, C, H, W) each, once made
    seen: EditedCall = field(default_factory=EditedCall)  # the target in the last pass

    def run(self, x: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor] | None, widen=None) -> object:
        """One forward pass of ``x`` with the target's output edited (:func:`edited_output`)."""
        with edited_output(self.net.get_submodule(self.path), make, widen) as self.seen:
            return self.net(x)

    def plain(self, edited: torch.Tensor | None) -> torch.Tensor:
        """(1, K) logits of a plain pass with the target's output replaced by ``edited`` (1, C, H, W) (None:
        unedited); checks that the target ran once with one map."""
        try:
            out = self.run(self.x, None if edited is None else (lambda f: edited.clone()))
        except (Exception, SystemExit) as exc:  # user code's sys.exit() is a failure too
            raise ModelLoadError(f"a forward pass of {self.name} failed: {why(exc)}") from exc
        output = self.seen.output
        if self.seen.calls != 1 or not torch.is_tensor(output) or output.ndim != 4 or output.shape[0] != 1:
            raise not_a_map(self.path, trace_model(self.net, self.x.shape[-1]), self.name)
        check_logits(tuple(out.shape) if torch.is_tensor(out) else None, type(out).__name__, self.name)
        return out

    def edit(self, edits: list[Edit], feature: torch.Tensor) -> torch.Tensor:
        """N maps (1, C, H, W): each edit once on its own copy of ``feature`` (1, C, H, W)."""
        self.outs = [apply_edit(e, feature) for e in edits]
        return self.outs

    def batch(self, strategy: str, edits: list[Edit], with_clean: bool,
              maps: list[torch.Tensor] | None = None) -> torch.Tensor | None:
        """(R, K) logits of one batched pass by ``strategy``: the edited ``maps`` (made from ``edits`` at the
        target when None), after the unedited row with ``with_clean``; None where the pass raises or
        returns other than R rows."""
        rows = len(edits) + with_clean
        self.outs = maps

        def make(feature: torch.Tensor) -> torch.Tensor:
            edited = self.edit(edits, feature) if maps is None else maps
            # a new tensor: what the model does in place to it cannot reach the kept maps
            return torch.cat([feature, *edited] if with_clean else edited)

        x = self.x if strategy == "widened" else self.x.expand(rows, *self.x.shape[1:]).clone()
        try:
            out = self.run(x, make, widen=BroadcastJoins if strategy == "widened" else None)
        except EditShapeError:
            raise
        except (Exception, SystemExit):
            return None
        if self.seen.calls != 1 or not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != rows:
            return None
        return out


def logits_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the float bits that batched kernels change (relative to the logits' scale)."""
    eps = torch.finfo(b.dtype).eps if b.is_floating_point() else 0.0
    tol = max(1e-4, 64 * eps) * float(b.abs().max().clamp_min(1.0))
    return a.shape == b.shape and bool(((a - b).abs() <= tol).all())


def _batches(job: _Job, strategy: str, edits: list[Edit], clean: bool, kept: list | None) -> torch.Tensor:
    """The logits of ``edits`` in batches of ``job.batch_size`` by ``strategy`` (the unedited row first with
    ``clean``); a batch that fails runs as plain passes."""
    size, rows = job.batch_size, []
    for start in range(0, len(edits), size):
        chunk, first = edits[start:start + size], clean and start == 0
        out = None if strategy == "single" else job.batch(strategy, chunk, with_clean=first)
        if out is None:
            made = strategy != "single" and job.outs is not None  # the edits ran at the target
            # the unedited map: from an earlier pass, else from a plain one
            before = job.plain(None) if first or job.seen.output is None else None
            out = torch.cat([job.plain(m) for m in (job.outs if made else job.edit(chunk, job.seen.output))])
            out = torch.cat([before, out]) if first else out
        if kept is not None:
            kept.append(torch.cat(job.outs))
        rows.append(out)
    return torch.cat(rows)


def _choose(job: _Job, kept: list | None) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(strategy, logits before, feature, logits after): the first strategy whose first batch equals plain
    passes (row 0 unedited, the last row with the last edit), remembered for the model and layer once that
    batch held an edited map unlike the unedited one (before that no mixing of rows could show)."""
    logits, feature = job.plain(None), job.seen.output
    chunk, rest = job.edits[:job.batch_size], job.edits[job.batch_size:]
    maps = job.edit(chunk, feature)
    if kept is not None:
        kept.append(torch.cat(job.outs))
    distinct = not all(bool((m == feature).all()) for m in maps)
    last = None
    for strategy in STRATEGIES[:2]:
        first = job.batch(strategy, chunk, with_clean=True, maps=maps)
        if first is None or not logits_close(first[:1], logits):
            continue
        last = job.plain(maps[-1]) if last is None else last
        if logits_close(first[-1:], last):
            break
    else:
        strategy, first = "single", torch.cat([logits, *(job.plain(m) for m in maps)])  # one plain pass each
    if distinct:
        _checked.setdefault(job.net, {})[job.path] = strategy
    after = [first[1:]] + ([_batches(job, strategy, rest, False, kept)] if rest else [])
    return strategy, first[:1], feature, torch.cat(after)  # row 0, as later calls give it


def check_finite(name: str, display: str, logits: torch.Tensor | None, after: torch.Tensor) -> None:
    """ModelLoadError when the unedited ``logits`` (None: not made) or the edited ``after`` hold NaN or inf."""
    for what, values in (("", logits), (f" with {display} edited", after)):
        if values is not None and not bool(torch.isfinite(values).all()):
            raise ModelLoadError(f"{name} returns NaN or infinite logits{what}: check its weights and the input")


def target_of(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[nn.Module, str, torch.Tensor, str, str]:
    """(module, name for messages, ``x`` on the model, the layer's name and path); UnknownNameError if unknown."""
    net = getattr(model, "module", model)
    name = str(getattr(model, "spec", "") or getattr(net, "arch", "") or type(net).__name__)
    x = on_model(net, x)
    found = layer_path(net, layer)
    if found is None:
        raise unknown_layer(layer, trace_model(net, x.shape[-1]), name, net)
    return net, name, x, *found


def forward_many(model: nn.Module, x: torch.Tensor, layer: str, edits: Iterable[Edit],
                 batch_size: int = 32, keep_features: bool = False, clean: bool = True) -> FeatureBatchRun:
    """N edits of one image's activation at ``layer``, batched: row i of ``logits_after`` is what a forward
    hook on the layer returning ``edits[i](output)`` gives (the module docstring says how, and when it falls
    back to full passes). The model runs in eval mode under ``torch.inference_mode()``; every module's mode
    is restored afterwards.

    Args:
        model: any classifier returning (1, K) logits for one image, or a :class:`~.loaded.LoadedModel`.
        x: (1, 3, H, W) preprocessed input (moved to the model's device and dtype).
        layer: a ``named_modules`` name whose module runs once and outputs one (1, C, h, w) map, or a
            built-in network's short layer name.
        edits: callables mapping the (1, C, h, w) map to a same-shape tensor, each on its own copy (in-place
            edits are fine), each called once, in order. At least one.
        batch_size: edited maps per pass (bounds memory).
        keep_features: also return the (N, C, h, w) edited maps.
        clean: also return the unedited logits (one more row in the first batch); False when the caller has
            them, e.g. from an earlier call on the same image.

    Raises:
        UnknownNameError: unknown layer (close matches first in ``.choices``).
        LayerError: the layer's output is not one (1, C, h, w) map, or it does not run once.
        ModelLoadError: the model fails, does not return (1, K) logits, or returns NaN or inf.
        ValueError: bad ``x`` or batch_size, no edits, or an edit returning another shape.
    """
    edits = list(edits)
    if not edits:
        raise UsageError("forward_many needs at least one edit")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not torch.is_tensor(x) or x.ndim != 4 or x.shape[:2] != (1, 3):
        raise UsageError(f"forward_many takes one image of shape (1, 3, H, W), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    net, name, x, display, path = target_of(model, x, layer)
    job = _Job(net, path, name, x, edits, batch_size)
    kept = [] if keep_features else None
    with eval_mode(net), torch.inference_mode():
        strategy = _checked.get(net, {}).get(path)
        if strategy is None:
            strategy, logits, feature, after = _choose(job, kept)
        else:
            out = _batches(job, strategy, edits, clean, kept)
            logits, feature, after = out[:1], job.seen.output, out[int(clean):]
    logits = logits if clean else None  # (a first call for a model and layer makes them for its check)
    check_finite(name, display, logits, after)
    return FeatureBatchRun(display, logits, after, feature, torch.cat(kept) if keep_features else None, strategy)

