"""The look shared by every figure: one palette, font sizes, small axes helpers, and atomic saving.

Matplotlib is used only through its object API (``Figure`` with an Agg canvas, never pyplot), so
nothing leaks between calls and no display is needed. Conventions for every figure:

* images are (H, W, 3) uint8 RGB; masks ``keep`` are (H, W) bool, True = kept;
* positions are (row, col) in pixels of the array shown (pixel centres at integers);
* rates and probabilities are fractions in [0, 1] (axes show them as percent);
* colours come from :data:`COLORS` (Okabe-Ito, colour-blind safe).
"""

from __future__ import annotations

import os
import textwrap
import warnings
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: One palette for every figure (Okabe & Ito 2008, colour-blind safe).
COLORS: dict[str, str] = {
    "dropblock": "#0072B2",  # blue
    "dropout": "#E69F00",  # orange
    "spatial_dropout": "#009E73",  # bluish green
    "cutout": "#CC79A7",  # reddish purple
    "dropped": "#D55E00",  # vermillion: dropped area overlay
    "seed": "#F0E442",  # yellow (black edge): DropBlock seed markers
    "target": "#000000",  # black dashed: target lines
}
METHOD_KEYS = ("dropblock", "dropout", "spatial_dropout", "cutout")
#: Further Okabe-Ito colours for series that are not methods, in order of use.
EXTRA_COLORS = ("#56B4E9", "#D55E00", "#000000", "#F0E442")
#: Perceptually uniform colormap for activations.
ACTIVATION_CMAP = "inferno"
#: File extension -> matplotlib format for :func:`save_figure`.
SAVE_FORMATS: dict[str, str] = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

TITLE_PT = 10.0  # panel titles
SUPTITLE_PT = 12.0
SMALL_PT = 8.5
DIM = 0.45  # brightness of the image under a mask overlay
DROPPED_ALPHA = 0.85  # opacity of the dropped-area fill
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DEFAULT_DPI = 150
"""The resolution image panels are reduced to when the caller does not say what it saves at."""


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: float = 150) -> Path:
    """Write ``fig`` to ``path`` atomically; the format comes from the extension.

    .png, .svg and .pdf are allowed (ValueError otherwise). ``dpi`` is dots per inch for
    raster output: a PNG is figsize * dpi pixels. The figure goes to a hidden temp file in
    the same directory (its name within the file system's limit), then ``os.replace`` puts it
    in place, so ``path`` is either the complete new file or untouched; on failure the temp file
    is removed and the error propagates (:func:`dropblock.files.write_atomic`). The file says it
    was made by dropblock (PNG ``Software``, SVG and PDF ``Creator``). Returns ``path`` as a Path.
    """
    out = Path(path)
    fmt = SAVE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        allowed = ", ".join(SAVE_FORMATS)
        got = repr(out.suffix) if out.suffix else "no extension"
        raise ValueError(f"cannot save a figure as {got} ({str(out)!r}): use one of {allowed}")
    from dropblock import __version__
    from dropblock.files import write_atomic
    from dropblock.images import FIGURE_SOFTWARE

    mark = f"{FIGURE_SOFTWARE} {__version__}"  # lets a later sweep of the folder tell it from a photo
    metadata = {"png": {"Software": mark}, "svg": {"Date": None, "Creator": mark},
                "pdf": {"CreationDate": None, "Creator": mark}}[fmt]
    # zlib level 1: a PNG a fifth larger, written in a third less time (it dominates `show`)
    extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
    with warnings.catch_warnings():  # a file name in a script the font lacks is drawn with boxes, not warned about
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        return write_atomic(out, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi, metadata=metadata, **extra))


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A fresh Figure with its own Agg canvas and constrained layout (no pyplot)."""
    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.04, h_pad=0.04, wspace=0.03, hspace=0.03)
    return fig


def check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    return image


def check_keep(keep: np.ndarray, shape: tuple[int, int], what: str = "keep") -> np.ndarray:
    keep = np.asarray(keep)
    if keep.shape != tuple(shape):
        raise ValueError(f"{what} must be {tuple(shape)} like the image, got {keep.shape}")
    return keep.astype(bool, copy=False)


def check_map(values: np.ndarray, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or (shape is not None and values.shape != tuple(shape)):
        want = f"{tuple(shape)}" if shape is not None else "(h, w)"
        raise ValueError(f"{what} must be {want}, got {values.shape}")
    return values


def check_seeds(seeds: np.ndarray | None) -> np.ndarray | None:
    """(K, 2) float (row, col), or None."""
    if seeds is None:
        return None
    s = np.asarray(seeds, dtype=np.float64)
    if s.size == 0:
        return np.zeros((0, 2))
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"seeds must be (K, 2) (row, col) pixel centres, got {s.shape}")
    return s


def method_color(method: str) -> str:
    """The method's palette colour (``spatial-dropout`` or ``spatial_dropout``); grey for other names."""
    return COLORS.get(method.replace("-", "_"), "#555555")


def wrap(title: str, width_in: float, pt: float = TITLE_PT) -> str:
    """Wrap each line of ``title`` to about the width of ``width_in`` inches at ``pt`` points."""
    chars = max(12, int(width_in * 72.0 / (0.56 * pt)))
    return "\n".join(textwrap.fill(line, chars) if len(line) > chars else line for line in title.split("\n"))


def plain(ax, *, frame: str | None = None, lw: float = 2.0) -> None:
    """No ticks; a coloured frame when ``frame`` is a colour, no frame when None."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        if frame is None:
            spine.set_visible(False)
        else:
            spine.set_visible(True)
            spine.set_edgecolor(frame)
            spine.set_linewidth(lw)


def masked(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """image * keep: dropped pixels exactly black."""
    return image * keep[:, :, None].astype(np.uint8)


def title_lines(*titles: str | None) -> int:
    """Lines in the tallest of ``titles``."""
    return max((t.count("\n") + 1 for t in titles if t), default=0)

