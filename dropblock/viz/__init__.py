"""Figures (matplotlib's object API only, never pyplot): masks on images, curves, feature maps.

Imports the library, never the CLI. Names load lazily, so ``import dropblock.viz`` is cheap until a
figure is drawn. Where each figure lives:

* :mod:`~dropblock.viz.masks`: ``show`` and ``compare`` on an image;
* :mod:`~dropblock.viz.curves`: the keep_prob schedule and the gamma sweep;
* :mod:`~dropblock.viz.features` and :mod:`~dropblock.viz.feature_compare`: ``show --layer`` and
  ``compare --layer`` on a CNN's feature maps, from the panels of :mod:`~dropblock.viz.panels`;
* :mod:`~dropblock.viz.sweep`: ``sweep`` (the paper's Figure 5);
* :mod:`~dropblock.viz.style`: palette, fonts and atomic saving; :mod:`~dropblock.viz.display`:
  panels reduced to the resolution they are shown at.

One public function per figure, ``<subject>_figure``, takes the library's result (a
:class:`~dropblock.methods.MaskDraw`, a :class:`~dropblock.effect.LayerEffect`, sweep points, ...)
and writes the titles; beside it, a private ``_draw_<subject>`` draws from plain arrays and numbers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "COLORS": "style", "ACTIVATION_CMAP": "style", "SAVE_FORMATS": "style", "save_figure": "style",
    "show_figure": "masks", "compare_figure": "masks",
    "schedule_figure": "curves", "gamma_sweep_figure": "curves",
    "feature_show_figure": "features", "feature_compare_figure": "feature_compare",
    "sweep_figure": "sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dropblock.viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dropblock.viz.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
