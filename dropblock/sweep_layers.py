"""Which layers a sweep runs on: ``--layer`` names and globs against a model's layer table, in call order,
and what share of a forward pass runs after each (for time estimates).

The table is the one ``dropblock layers --filter '*'`` shows: every module whose output is a 4-D map, in
the order the modules are called, a built-in network's short names (``stem``, ``blocks.5``) standing for
their modules. A glob (``*``, ``?``, ``[``; ``*`` matches dots too) selects from it; a plain name is looked
up as everywhere else (a ``named_modules`` name, or a built-in's short name, case as the model allows).
Nothing here prints.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PickedLayer", "LayerPicks", "layer_order", "pick_layers", "suffix_share"]


@dataclass(frozen=True)
class PickedLayer:
    """A layer to sweep: ``name`` (as the table shows it), ``index`` (its position among the model's 4-D
    layers in call order, from 0), ``path`` (its ``named_modules`` name)."""

    name: str
    index: int
    path: str


@dataclass(frozen=True)
class LayerPicks:
    """``layers`` to sweep, in call order, each once; ``skipped``: layers a glob matched that run more than
    once in a forward pass (their output is not one map, so they cannot be edited)."""

    layers: list[PickedLayer]
    skipped: list[str]


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def layer_order(model) -> list[PickedLayer]:
    """Every 4-D layer of ``model`` (a LoadedModel) in call order; built-ins' short names replace their
    modules' names. Layers that run more than once are included (``calls`` tells them apart)."""
    aliases = getattr(model.module, "layer_paths", {}) or {}
    short = {path: alias for alias, path in aliases.items()}
    return [PickedLayer(short.get(info.name, info.name), i, info.name) for i, info in enumerate(model.layers)]


def pick_layers(model, patterns: Sequence[str]) -> LayerPicks:
    """The layers ``patterns`` name, in call order, each once.

    Raises:
        UnknownNameError: a glob that matches no layer that runs once, or an unknown name (close matches
            among the table's names first).
        LayerError: a plain name whose output is not one 4-D map.
    """
    from dropblock.models import UnknownNameError

    order = layer_order(model)
    calls = {info.name: info.calls for info in model.layers}
    by_path = {p.path: p for p in order}
    picked: dict[str, PickedLayer] = {}
    skipped: list[str] = []
    for pattern in patterns:
        pattern = str(pattern).strip()
        if not _has_magic(pattern):
            info = model.layer(pattern)  # raises for an unknown name or a layer that is not one map
            path = getattr(model.module, "layer_paths", {}).get(info.name, info.name)
            picked.setdefault(path, by_path[path])
            continue
        hits = [p for p in order if fnmatch.fnmatchcase(p.name, pattern)]
        once = [p for p in hits if calls[p.path] == 1]
        if not once:
            raise UnknownNameError("layer", pattern, [p.name for p in order if calls[p.path] == 1],
                                   context=model.spec, hint=_no_match_hint(pattern, hits, model.spec))
        skipped += [p.name for p in hits if calls[p.path] != 1 and p.name not in skipped]
        for p in once:
            picked.setdefault(p.path, p)
    return LayerPicks(sorted(picked.values(), key=lambda p: p.index), skipped)


def _no_match_hint(pattern: str, hits: list[PickedLayer], spec: str) -> str:
    if hits:
        return f"the glob matches only layers that run more than once ({', '.join(p.name for p in hits[:3])})"
    return f"the glob matches no layer (`dropblock layers --model {spec} --filter '*'` lists them; * matches dots)"


def suffix_share(model, path: str) -> float:
    """The share (0..1) of a forward pass's work after the module ``path`` returns: the output sizes of the
    leaf modules called after it, over those of all leaf modules (a proxy for time; for estimates only)."""
    modules = dict(model.module.named_modules())
    runs = model.trace.runs
    start = next((i for i, r in enumerate(runs) if r.name == path), None)
    if start is None:
        return 1.0

    def size(run) -> int:
        leaf = run.name in modules and not any(True for _ in modules[run.name].children())
        return int(_prod(run.shape)) if leaf and run.shape else 0

    total = sum(size(r) for r in runs)
    after = sum(size(r) for r in runs[start + 1:] if not r.name.startswith(path + "."))
    return after / total if total else 1.0


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for v in shape:
        out *= int(v)
    return out
