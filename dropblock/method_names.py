"""The names of the regularizers, without torch (for the CLI's checks, the sweep and its CSV)."""

from __future__ import annotations

METHODS = ("dropblock", "dropout", "cutout")
"""The methods drawn on an image (one mask shared by the colour channels)."""
FEATURE_METHODS = ("dropblock", "dropout", "spatial-dropout", "cutout")
"""The methods drawn on feature maps: METHODS and spatial dropout (whole channels)."""
