"""DropBlock, dropout and Cutout: exact masks, the exact gamma math, and figures.

The public names are loaded lazily, so that ``import dropblock`` (and the CLI's
``--help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # torch modules
    "DropBlock2d": "dropblock.modules",
    "ScheduledDropBlock2d": "dropblock.modules",
    "Dropout": "dropblock.modules",
    "SpatialDropout2d": "dropblock.modules",
    "Cutout": "dropblock.modules",
    "add_dropblock": "dropblock.placement",
    # functional forms
    "drop_block2d": "dropblock.functional",
    "dropout": "dropblock.functional",
    "spatial_dropout": "dropblock.functional",
    "cutout": "dropblock.functional",
    # masks
    "dropblock_mask": "dropblock.masks",
    "dropout_mask": "dropblock.masks",
    "spatial_dropout_mask": "dropblock.masks",
    "cutout_mask": "dropblock.masks",
    "BlockMask": "dropblock.masks",
    # analytic math (no torch)
    "gamma_paper": "dropblock.gamma",
    "gamma_exact": "dropblock.gamma",
    "drop_probability_map": "dropblock.gamma",
    "expected_drop_rate": "dropblock.gamma",
    "cutout_expected_drop_rate": "dropblock.gamma",
    "linear_keep_prob": "dropblock.gamma",
    "cutout_length_for": "dropblock.gamma",
    "convention_drop_rates": "dropblock.conventions",
    # measured drop rates
    "measure_dropblock": "dropblock.measure",
    "measure_function": "dropblock.measure",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dropblock' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
