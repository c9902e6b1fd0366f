"""Option parsing shared by the commands: checks that fail in one line, shared option declarations,
the progress bar, and the steps every figure command takes (load the image, save the figure)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from dropblock.cli.app import error_line
from dropblock.cli.report import note, stderr_console

GAMMA_HELP = "paper (Equation 1) or exact (expected drop rate = target)."
METHOD_HELP = "dropblock, dropout or cutout; with --layer also spatial-dropout (whole channels)."
BLOCK_HELP = ("DropBlock block side: in pixels of the input image \\[default: 1/8 of its shorter side]; "
              "with --layer, in feature-map units \\[default: 7, clipped to the map].")

# Options that several commands share, declared once.
KeepProbOpt = Annotated[Optional[float], typer.Option("--keep-prob", help="Target keep probability (1 - drop rate).")]
BlockOpt = Annotated[Optional[int], typer.Option("--block-size", "-b", help=BLOCK_HELP, show_default=False)]
DpiOpt = Annotated[Optional[int], typer.Option(
    "--dpi", help="Resolution of raster figures \\[default: 150; 110 with --layer, whose figure is larger].",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of the table.")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=2**64 - 1,
                                      help="Random seed, 0 to 2**64 - 1: the same seed gives the same masks.")]
LayerOpt = Annotated[Optional[str], typer.Option(
    "--layer", "-l", help="Work on this layer's feature maps of a pretrained CNN (see `dropblock layers`).")]
MODEL_HELP = ("the CNN: efficientnet-lite0, resnet18, resnet50, torchvision:NAME, timm:NAME, module.path:function "
              "or path/to/file.py:function (called with no arguments, returns an nn.Module).")
INPUT_SIZE_HELP = ("the network's input side in pixels \\[default: from the model's config; 224 for your own "
                   "code].")
ModelOpt = Annotated[str, typer.Option("--model", help=f"With --layer: {MODEL_HELP}")]
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="With --layer: a state dict for the model (.pt, .pth or .safetensors) instead of its default "
                      "weights; a pickled module is refused, nothing in the file runs.", show_default=False)]
DownloadOpt = Annotated[bool, typer.Option(
    "--download", help="With --layer: fetch the model's default weights when they are not in the torch hub or "
                       "Hugging Face cache.")]
InputSizeOpt = Annotated[Optional[int], typer.Option(
    "--input-size", help=f"With --layer: {INPUT_SIZE_HELP}", show_default=False)]
MeanOpt = Annotated[Optional[str], typer.Option(
    "--mean", help="With --layer: the normalization mean R,G,B in 0..1 pixel units \\[default: from the model's "
                   "config; ImageNet's for your own code].", show_default=False)]
StdOpt = Annotated[Optional[str], typer.Option(
    "--std", help="With --layer: the normalization std R,G,B in 0..1 pixel units \\[default: as --mean].",
    show_default=False)]
ClassNamesOpt = Annotated[Optional[Path], typer.Option(
    "--class-names", help="With --layer: a file with one class name per line, one per output \\[default: the "
                          "weights' names, else ImageNet's for 1000 outputs, else 'class N'].", show_default=False)]
SharedOpt = Annotated[bool, typer.Option("--shared-channels", help="With --layer: one mask for all channels.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="With --layer: cpu, cuda or auto.")]
CamOpt = Annotated[Optional[str], typer.Option(
    "--cam", help="With --layer: a class activation map before and after (torchcam): gradcam, gradcampp, "
                  "smoothgradcampp, xgradcam, layercam, cam, scorecam, sscam or iscam.", show_default=False)]
CamLayerOpt = Annotated[Optional[str], typer.Option(
    "--cam-layer", help="With --cam: the layer the map is taken at, at or after --layer \\[default: the model's "
                        "last 4-D layer].", show_default=False)]
ClassOpt = Annotated[Optional[str], typer.Option(
    "--class", help="With --cam: the class (index or name) \\[default: the clean top-1].", show_default=False)]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit: code 2 for usage errors, 1 for failures."""
    error_line(message)
    raise typer.Exit(code)


def drop_rate_from(drop_rate: Optional[float], keep_prob: Optional[float], default: float = 0.1) -> float:
    """The target drop rate from --drop-rate or --keep-prob (not both), checked to be in [0, 1)."""
    if drop_rate is not None and keep_prob is not None:
        fail("give --drop-rate or --keep-prob, not both", 2)
    if keep_prob is not None:
        if not 0.0 < keep_prob <= 1.0:
            fail(f"--keep-prob must be in (0, 1], got {keep_prob:g}", 2)
        return 1.0 - keep_prob
    p = default if drop_rate is None else drop_rate
    if not 0.0 <= p < 1.0:
        fail(f"--drop-rate must be in [0, 1), got {p:g}", 2)
    return p


def parse_size(text: str, option: str) -> tuple[int, int]:
    """'14' -> (14, 14); '28x14' -> (28, 14) as (height, width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        fail(f"{option} must be N or HxW with whole numbers, e.g. 14 or 28x14; got {text!r}", 2)
    if len(values) not in (1, 2) or min(values) < 1:
        fail(f"{option} must be N or HxW with numbers >= 1, e.g. 14 or 28x14; got {text!r}", 2)
    return (values[0], values[-1])


def check_positive(value: Optional[int], option: str, minimum: int = 1) -> None:
    """Exit 2 unless ``value`` is None or at least ``minimum``."""
    if value is not None and value < minimum:
        fail(f"{option} must be >= {minimum}, got {value}", 2)


def check_gamma_mode(gamma_mode: str) -> None:
    """Exit 2 unless --gamma is one of the library's GAMMA_MODES."""
    from dropblock.gamma import GAMMA_MODES

    if gamma_mode not in GAMMA_MODES:
        fail(f"--gamma must be {' or '.join(GAMMA_MODES)}, got {gamma_mode!r}", 2)


def check_figure_options(gamma_mode: str, dpi: Optional[int], seed: int, method: Optional[str] = None,
                         feature_maps: bool = False) -> None:
    """The options every mask figure command takes: --gamma, --dpi, --seed and, for show, --method
    (spatial-dropout too on feature maps)."""
    from dropblock.method_names import FEATURE_METHODS, METHODS

    allowed = FEATURE_METHODS if feature_maps else METHODS
    if method is not None and method not in allowed:
        extra = "; spatial-dropout needs --layer" if method == "spatial-dropout" else ""
        fail(f"--method must be one of {', '.join(allowed)}; got {method!r}{extra}", 2)
    check_gamma_mode(gamma_mode)
    check_dpi(dpi)
    check_positive(seed, "--seed", 0)


def check_cam_options(layer: Optional[str], cam: Optional[str], cam_layer: Optional[str],
                      class_: Optional[str]) -> None:
    """--cam needs --layer and a torchcam method; --cam-layer and --class need --cam."""
    if cam is None:
        if cam_layer is not None or class_ is not None:
            fail("--cam-layer and --class need --cam METHOD (e.g. --cam gradcam)", 2)
        return
    if layer is None:
        fail("--cam needs --layer: the map is taken on a CNN's feature maps", 2)
    from dropblock.cam import CAM_METHODS

    if cam not in CAM_METHODS:
        fail(f"--cam must be one of {', '.join(CAM_METHODS)}; got {cam!r}", 2)


def resolve_device(name: str) -> str:
    """'cpu', 'cuda', 'mps' or 'auto' (cuda when available) -> a torch device string; exit 2 if the device is
    missing."""
    if name not in ("cpu", "cuda", "mps", "auto"):
        fail(f"--device must be cpu, cuda, mps or auto, got {name!r}", 2)
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available here; use --device cpu", 2)
    if name == "mps" and not torch.backends.mps.is_available():
        fail("--device mps: no Apple GPU (MPS) is available here; use --device cpu", 2)
    return name


def check_output_path(path: Path, option: str, inputs: tuple[Optional[Path], ...] = ()) -> None:
    """Refuse (exit 2), before any work, an output with an unknown extension, one that is a folder or one of
    ``inputs`` (the same resolved path or the same file: hard links and symlinks too), or one that cannot be
    written where it goes (a missing or read-only folder, a name over the file system's limit, a FIFO or a
    device in its place)."""
    from dropblock.files import same_file

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        fail(f"{option} {str(path)!r}: the file must end in .png, .svg or .pdf", 2)
    if os.path.isdir(path):
        fail(f"{option} {str(path)!r} is a directory; give a file name", 2)
    for i in inputs:
        if i is not None and same_file(path, i):
            fail(f"{option} {str(path)!r} is the input {str(i)!r} (the same file); choose another output file", 2)
    check_writable_or_fail(path, option)


def check_writable_or_fail(path: Path, option: str) -> None:
    """Exit 2 unless a file can be written at ``path`` now (:func:`dropblock.files.check_writable`)."""
    from dropblock.files import check_writable

    try:
        check_writable(path)
    except OSError as e:
        fail(f"{option} {e}", 2)


def check_dpi(dpi: Optional[int]) -> None:
    """Exit 2 unless --dpi is None or in [10, MAX_DPI]."""
    from dropblock.limits import MAX_DPI

    check_positive(dpi, "--dpi", 10)
    check_at_most(dpi, MAX_DPI, "--dpi", "dots per inch")


def check_at_most(value: Optional[int], limit: int, option: str, unit: str = "") -> None:
    """Exit 2, with one line naming the limit, when ``value`` is over ``limit`` (a limit of
    :mod:`dropblock.limits`); None passes."""
    from dropblock.limits import over_limit

    if value is not None and (text := over_limit(value, limit, option, unit)):
        fail(text, 2)


def default_output(image: Optional[Path], suffix: str) -> Path:
    """``./IMAGE-SUFFIX.png`` in the working directory (``dropblock-SUFFIX.png`` without an image)."""
    stem = image.stem if image is not None else "dropblock"
    return Path.cwd() / f"{stem}-{suffix}.png"


def load_image_or_fail(image: Path, short_side: Optional[int] = None):
    """The image as a LoadedImage; exit 1 with one line when it cannot be read (or, with ``short_side``,
    would be too large once scaled to it: see :func:`dropblock.images.load_image`). Notes go to stderr."""
    from dropblock.images import ImageLoadError, load_image

    try:
        loaded = load_image(image, short_side=short_side)
    except ImageLoadError as e:
        fail(str(e), 1)
    for text in loaded.notes:
        stderr_console().print(f"[dim]note: {text}[/dim]")
    return loaded


def save_or_fail(fig, path: Path, dpi: int = 150) -> None:
    """Write ``fig`` atomically; exit 1 with one line when it cannot be written."""
    problem = save_or_say(fig, path, dpi)
    if problem is not None:
        fail(problem, 1)


def save_or_say(fig, path: Path, dpi: int = 150) -> Optional[str]:
    """Write ``fig`` atomically; None, or the one line that says why it could not be written (the file
    is then untouched and no temporary file is left)."""
    from dropblock.errors import one_line
    from dropblock.viz import save_figure

    try:
        save_figure(fig, path, dpi=dpi)
    except (OSError, ValueError, MemoryError) as e:
        return f"cannot write {str(path)!r}: {one_line(e)}"
    return None


def stderr_is_terminal() -> bool:
    """True when stderr is a terminal (its file descriptor, whatever FORCE_COLOR or TTY_COMPATIBLE say):
    progress bars are drawn only there, so a log file gets no escape codes and no blank line."""
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def note_if_clipped(block_size: int, height: int, width: int, unit: str = "", what: str = "map") -> None:
    """The one "block clipped" line (:func:`dropblock.gamma.clip_note`) on stderr, when the block does not fit."""
    from dropblock.gamma import clip_note

    text = clip_note(block_size, height, width, unit, what)
    if text is not None:
        note(text)


class ProgressBar:
    """A rich progress bar on stderr, shown only for work that takes more than a moment."""

    def __init__(self, total: int, description: str, show: bool) -> None:
        self.progress = None
        if show and total > 0 and stderr_is_terminal():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=stderr_console(), transient=True)
            self.task = self.progress.add_task(description, total=total)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, n: int) -> None:
        """Count ``n`` more units of work done."""
        if self.progress is not None:
            self.progress.advance(self.task, n)
