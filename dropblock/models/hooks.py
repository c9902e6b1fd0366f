"""Editing one module's output in any model, N edits at a time, as a forward hook would.

A clean pass runs the model once on the image and finds which finished calls before the
target can stand in for the prefix, with their map or with a zero placeholder where the model
dropped the map (:mod:`dropblock.models.recording`). On a built-in network the pass starts at
the first step that calls the target, after the steps before it have run once.

Each batch of N edited maps then reruns the model on N copies of the image (the batch dimension
of a stride-0 view) with the target's ``forward`` replaced by "return the edited maps" and each
standing-in call's ``forward`` by "return its map", so the prefix is not computed again; the
code around those calls runs as written. If that rerun does not call the modules as the clean
pass did, or raises, the batch is run again with only the target replaced (the whole prefix
computed N times), which is exact for any model. Either way row i is what a forward hook on the
target returning ``edits[i](output)`` gives, up to the last float bits of batched kernels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from dropblock.errors import one_line

from .base import SteppedNet
from .errors import ModelLoadError
from .layers import check_logits, not_a_map, trace_model
from .recording import AFTER, CleanRecorder
from .trace import PatchedForwards

Reuse = dict[tuple[str, int], tuple[torch.Tensor, Counter[str] | None]]


@dataclass
class CleanPass:
    """The clean pass's results.

    Attributes:
        logits: (1, K) output.
        feature: (1, C, H, W) copy of the target's output.
        reuse: (module name, call index) -> (the (1, C, H, W) map it stands in with, or for a
            placeholder a 0-dim zero of its dtype and device; calls nested inside it by module
            name, or None for none).
        placeholders: the keys of ``reuse`` that stand in with zeros, and their (1, C, H, W) shape.
        totals: calls per module name in the whole pass.
        modules: the recorded modules by name.
        patched: the modules whose ``forward`` a rerun replaces, by name: the standing-in
            modules and the target.
        run: what a pass runs: the model, or for a built-in network its steps from the first
            that runs the target (:meth:`~dropblock.models.base.SteppedNet.first_step`).
        input: what ``run`` takes: the (1, 3, H, W) image, or the output of the steps before.
    """

    logits: torch.Tensor
    feature: torch.Tensor
    reuse: Reuse
    placeholders: dict[tuple[str, int], tuple[int, ...]]
    totals: Counter[str]
    modules: dict[str, nn.Module]
    patched: dict[str, nn.Module]
    run: Callable[[torch.Tensor], object]
    input: torch.Tensor
    _batched: dict[int, Reuse] = field(default_factory=dict, repr=False)

    def batched(self, n: int) -> Reuse:
        """``reuse`` with each map expanded to a batch of ``n`` and each placeholder to zeros of
        (n, C, H, W) (stride 0, no memory); made once per n."""
        if n not in self._batched:
            shapes = self.placeholders
            self._batched[n] = {
                key: (out.expand(n, *(shapes[key] if key in shapes else out.shape)[1:]), nested)
                for key, (out, nested) in self.reuse.items()}
        return self._batched[n]


def _forward(run: Callable, x: torch.Tensor, model_name: str) -> object:
    """``run(x)``, with an error it raises as a ModelLoadError naming the model."""
    try:
        return run(x)
    except Exception as exc:
        raise ModelLoadError(f"a forward pass of {model_name} failed: "
                             f"{one_line(exc, with_type=True, limit=160)}") from exc


def _record(model: nn.Module, run: Callable, x: torch.Tensor, target: str, model_name: str,
            hold_all: bool) -> tuple[object, CleanRecorder]:
    with CleanRecorder(model, target, hold_all) as rec:
        try:
            logits = _forward(run, x, model_name)
        finally:
            rec.flow.off()
    if rec.phase == AFTER:
        rec.check()
    return logits, rec


def clean_pass(model: nn.Module, x: torch.Tensor, target: str, model_name: str) -> CleanPass:
    """Run ``model`` (eval mode, no grad: the caller's job) on ``x`` (1, 3, H, W), recording
    the calls of the target, its ancestors and their children (see
    :func:`~dropblock.models.recording.watch_modules`); once, or twice when a value read after
    the target was computed from a map the model dropped. A built-in network runs the steps
    before the first one that calls the target once, unrecorded (the same values: its forward
    pass is its chain of steps), so the clean pass and the reruns start there.

    Raises:
        LayerError: the target does not run exactly once or its output is not a (1, C, H, W) map.
        ModelLoadError: the forward pass raised, or its output is not (1, classes) logits.
    """
    run, start = model, model.first_step(target) if isinstance(model, SteppedNet) else 0
    inp = x
    if start:
        run = partial(model.forward_range, start=start)
        inp = _forward(partial(model.forward_range, start=0, stop=start), x, model_name)
    logits, rec = _record(model, run, inp, target, model_name, hold_all=False)
    if rec.counts[target] == 1 and rec.feature is not None and (
            rec.failed or rec.edited_since()):
        logits, rec = _record(model, run, inp, target, model_name, hold_all=True)
    if rec.counts[target] != 1 or rec.feature is None:
        raise not_a_map(target, trace_model(model, x.shape[-1]), model_name)
    check_logits(tuple(logits.shape) if torch.is_tensor(logits) else None,
                 type(logits).__name__, model_name)
    edited = rec.edited_since()  # a map edited in place after the target ran stands in no more
    reuse = {(c.name, c.index): (out, Counter(d.name for d in c.descendants()) if c.children
                                 else None) for c, out in rec.reuse.items() if c not in edited}
    placeholders = {(c.name, c.index): c.shape for c in rec.placeholders}
    modules = {name: rec.modules[name] for name in rec.counts}
    patched = {name: modules[name] for name in {name for name, _ in reuse} | {target}}
    return CleanPass(logits, rec.feature, reuse, placeholders, Counter(rec.counts), modules,
                     patched, run, inp)


def _rerun(run: Callable, x: torch.Tensor, target: str, edited: torch.Tensor,
           reuse: Reuse | None, modules: dict[str, nn.Module]) -> tuple[object, dict[str, int]]:
    """One batched pass of ``run`` on N copies of ``x`` with the target's output set to
    ``edited`` (N, C, H, W) and ``reuse`` (its maps already batched) standing in. The copies
    are a stride-0 view of ``x`` (no memory; an in-place write to it raises), or with ``reuse``
    None real copies and nothing standing in. Returns the output and the calls per patched
    module."""
    n = edited.shape[0]
    stand_ins = reuse or {}
    counters = dict.fromkeys(modules, 0)

    def make(name: str, forward: Callable) -> Callable:
        def replaced(*args: object, **kwargs: object) -> object:
            index = counters[name]
            counters[name] = index + 1
            if index == 0 and name == target:
                return edited
            saved = stand_ins.get((name, index))
            if saved is None:
                return forward(*args, **kwargs)
            if saved[1]:
                for inner, calls in saved[1].items():  # the calls it would have made
                    counters[inner] = counters.get(inner, 0) + calls
            return saved[0]
        return replaced

    with PatchedForwards(modules, make):
        out = run(x.repeat(n, 1, 1, 1) if reuse is None else x.expand(n, *x.shape[1:]))
    return out, counters


def edited_logits(target: str, edited: torch.Tensor, clean: CleanPass,
                  model_name: str) -> torch.Tensor:
    """(N, K) logits with the target's output replaced by ``edited`` (N, C, H, W)."""
    n, classes = edited.shape[0], clean.logits.shape[1]
    patched = clean.patched
    try:  # with nothing to reuse this still saves copying the input N times
        out, counters = _rerun(clean.run, clean.input, target, edited, clean.batched(n), patched)
        if (torch.is_tensor(out) and tuple(out.shape) == (n, classes)
                and all(counters[name] == clean.totals[name] for name in patched)):
            return out
    except Exception:  # e.g. an in-place op on a reused map: rerun without reuse
        pass
    try:
        out, _ = _rerun(clean.run, clean.input, target, edited, None,
                        {target: clean.modules[target]})
    except Exception as exc:
        raise ModelLoadError(f"a forward pass of {model_name} with {target} edited failed: "
                             f"{one_line(exc, with_type=True, limit=160)}") from exc
    if not torch.is_tensor(out) or tuple(out.shape) != (n, classes):
        raise ModelLoadError(f"{model_name} with {target} edited returned "
                             f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}"
                             f" for {n} images, expected ({n}, {classes}) logits")
    return out
