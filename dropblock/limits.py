"""The sizes this package refuses before it allocates anything, each named once.

They bound memory, not correctness: each is far above what the command is for, and far below what
would exhaust a machine. A value over a limit is refused with one line that names the limit
(:func:`over_limit`). Nothing here imports torch, numpy or Pillow.
"""

from __future__ import annotations

__all__ = ["MAX_RESIZED_PIXELS", "MAX_MAP_CELLS", "MAX_DPI", "MAX_INPUT_SIZE", "MAX_SCHEDULE_STEPS", "MAX_PASS_ROWS",
           "over_limit"]

MAX_RESIZED_PIXELS = 89_478_485
"""Pixels of an image once it is resized for a network (the upscaled side included): Pillow's own
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), 268 MB as 8-bit RGB. A 100000x3 PNG
scaled to 256 px on its short side would be 2185 megapixels."""

MAX_MAP_CELLS = 4096 * 4096
"""Cells of one feature map that ``dropblock gamma`` draws masks on (``--feature-size`` H x W):
16.8 M cells, 64 MB per float32 mask."""

MAX_DPI = 1200
"""Dots per inch of a raster figure (``--dpi``): print resolution. A 12 x 8 inch figure at 1200 dpi
is 138 megapixels, 553 MB of RGBA."""

MAX_INPUT_SIZE = 2048
"""Side, in pixels, of a network's square input (``--input-size``): 9x the 224 of ImageNet models.
The check belongs where ``--input-size`` is parsed (``dropblock.cli.models.model_choice``)."""


MAX_SCHEDULE_STEPS = 10**12
"""Training steps of a keep_prob schedule (``schedule --steps``): a million times ImageNet's 10**6 steps,
and far inside the integers that steps are computed with (2**63)."""

MAX_PASS_ROWS = 1024
"""Rows of one forward pass that ``sweep --images-per-pass`` asks for (images x (1 + their edits at a layer)):
32 times the default pass; at an early layer of a 224-px network (64 x 112 x 112 float32, 3.2 MB a row)
one map of the pass is 3.3 GB."""


def over_limit(value: int, limit: int, what: str, unit: str = "") -> str | None:
    """None when ``value`` <= ``limit``, else one line naming both, e.g.
    ``"--dpi 100000 is over the limit of 1200 dots per inch"``."""
    if value <= limit:
        return None
    unit = f" {unit}" if unit else ""
    return f"{what} {value:,} is over the limit of {limit:,}{unit}"
