"""The ``dropblock`` command line. Thin: parses options, calls the library, prints tables or JSON.

torch and matplotlib are imported inside the commands that need them, so ``--help`` and shell
completion stay instant. Errors are one line on stderr: exit 2 for usage, 1 for failures.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer vendors click from 0.2x on
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - typer on top of click
    from click.exceptions import Abort, ClickException, NoArgsIsHelpError


def _stdout() -> Console:
    # rich assumes 80 columns when stdout is not a terminal; tables read better a little wider
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 120)


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=False)


def _error_line(message: str) -> None:
    print(f"dropblock: error: {message}", file=sys.stderr)


class _Group(TyperGroup):
    """Turns click's multi-line usage errors (and any stray exception) into one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: D102
        try:
            rv = super().main(args=args, prog_name=prog_name or "dropblock", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except NoArgsIsHelpError:  # typer has printed the help already
            code = 0
        except ClickException as e:
            _error_line(f"{e.format_message()} (see --help)")
            code = e.exit_code
        except Abort:
            _error_line("aborted")
            code = 130
        except Exception as e:  # a bug: say so in one line, traceback on request
            if os.environ.get("DROPBLOCK_DEBUG"):
                raise
            _error_line(f"internal error: {type(e).__name__}: {e} (set DROPBLOCK_DEBUG=1 for the traceback)")
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_Group,
    name="dropblock",
    help="See what DropBlock, dropout and Cutout do to an image or a CNN's feature maps, and audit the DropBlock gamma math.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit: code 2 for usage errors, 1 for failures."""
    _error_line(message)
    raise typer.Exit(code)


def _print_json(obj: Any) -> None:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    sys.stdout.write(json.dumps(clean(obj), indent=2) + "\n")


def _version(value: bool) -> None:
    if value:
        from dropblock import __version__

        print(f"dropblock {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """See what DropBlock, dropout and Cutout do to an image or a CNN's feature maps, and audit the DropBlock gamma math."""


# ---- option parsing shared by the commands -------------------------------------------------------

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
    if value is not None and value < minimum:
        fail(f"{option} must be >= {minimum}, got {value}", 2)


def resolve_device(name: str) -> str:
    """'cpu', 'cuda' or 'auto' (cuda when available) -> a torch device string; exit 2 if cuda is missing."""
    if name not in ("cpu", "cuda", "auto"):
        fail(f"--device must be cpu, cuda or auto, got {name!r}", 2)
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available here; use --device cpu", 2)
    return name


class _ProgressBar:
    """A rich progress bar on stderr, shown only for work that takes more than a moment."""

    def __init__(self, total: int, description: str, show: bool) -> None:
        self.progress = None
        if show and total > 0:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=_stderr(), transient=True)
            self.task = self.progress.add_task(description, total=total)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)


# ---- dropblock gamma -------------------------------------------------------------------------------

@app.command()
def gamma(
    feature_size: str = typer.Option("14", "--feature-size", "-f", help="Feature map size: N or HxW (height x width)."),
    block_size: int = typer.Option(7, "--block-size", "-b", help="Block side in feature-map units."),
    keep_prob: Optional[float] = typer.Option(None, "--keep-prob", help="Target keep probability (the paper's keep_prob)."),
    drop_rate: Optional[float] = typer.Option(None, "--drop-rate", "-p", help="Target drop rate p = 1 - keep_prob \\[default: 0.1]."),
    samples: int = typer.Option(20000, "--samples", "-n", help="Masks to draw for the measured drop rate (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the masks."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    gamma_mode: str = typer.Option("paper", "--gamma", help="Gamma for the measured masks: paper (Equation 1) or exact."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Sweep block-size or feature-size and print a table."),
    impl: list[str] = typer.Option([], "--impl", help="Also measure an installed function MODULE:FUNCTION called as fn(x, p, block_size); repeatable."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the realized drop rate of each scheme against block size (or the swept size) to FILE (.png, .svg, .pdf)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
) -> None:
    """Audit the DropBlock gamma: Equation 1, the exact expected drop rate, measured masks, public implementations."""
    height, width = parse_size(feature_size, "--feature-size")
    check_positive(block_size, "--block-size")
    check_positive(samples, "--samples", 0)
    p = drop_rate_from(drop_rate, keep_prob)
    if gamma_mode not in ("paper", "exact"):
        fail(f"--gamma must be paper or exact, got {gamma_mode!r}", 2)
    if sweep is not None and sweep not in ("block-size", "feature-size"):
        fail(f"--sweep must be block-size or feature-size, got {sweep!r}", 2)
    if plot is not None:
        _check_output_path(plot, "--plot")
    from dropblock.measure import ImplError, load_function

    try:
        impls = [(spec, load_function(spec)) for spec in impl]
    except ImplError as e:
        fail(str(e), 2)
    dev = resolve_device(device)
    from dropblock.audit import audit_gamma, audit_json, sweep_values

    if sweep is None and plot is not None:
        sweep = "block-size"
    settings = [(block_size, height, width)]
    if sweep == "block-size":
        settings = [(b, height, width) for b in sweep_values(sweep, block_size, height, width)]
    elif sweep == "feature-size":
        settings = [(block_size, s, s) for s in sweep_values(sweep, block_size, height, width)]
    units = samples * sum(h * w for _, h, w in settings) * (1 + len(impls))
    audits = []
    try:
        total = samples * (1 + len(impls)) if len(settings) == 1 else len(settings)
        with _ProgressBar(total, "drawing masks", show=units > 2_000_000) as bar:
            for b, h, w in settings:
                one = len(settings) == 1
                audits.append(audit_gamma(p, b, h, w, gamma_mode=gamma_mode, samples=samples, seed=seed, device=dev,
                                          impls=impls, progress=bar.advance if one else None))
                if not one:
                    bar.advance(1)
    except ImplError as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(str(e), 2)
    if plot is not None:
        _gamma_plot(plot, sweep, settings, audits)
    if as_json:
        if len(audits) == 1:
            out = audit_json(audits[0])
        else:
            out = {"sweep": sweep, "values": [s[0] if sweep == "block-size" else s[1] for s in settings],
                   "rows": [audit_json(a) for a in audits]}
        if plot is not None:
            out["plot"] = str(plot)
        _print_json(out)
        return
    from dropblock.tables import gamma_table, sweep_table

    console = _stdout()
    if len(audits) == 1:
        console.print(gamma_table(audits[0]))
        if audits[0].clipped:
            _stderr().print(f"[yellow]note:[/yellow] block {block_size} is larger than the {height}x{width} map: "
                            f"clipped to {audits[0].block[0]}x{audits[0].block[1]}")
    else:
        values = [s[0] if sweep == "block-size" else s[1] for s in settings]
        console.print(sweep_table(sweep, values, audits))
    if plot is not None:
        console.print(f"plot written to {plot}")


def _gamma_plot(path: Path, sweep: str, settings, audits) -> None:
    import numpy as np

    from dropblock.viz import figure_gamma_sweep

    xs = np.array([s[0] if sweep == "block-size" else s[1] for s in settings])
    series = {"Equation 1 (this library; torchvision, odd blocks)": np.array([a.expected_drop_rate_paper for a in audits]),
              "exact gamma (this library)": np.array([a.p for a in audits])}
    for i, c in enumerate(audits[0].conventions):
        if c.name == "torchvision":
            continue
        series[c.label] = np.array([np.nan if a.conventions[i].drop_rate is None else a.conventions[i].drop_rate
                                    for a in audits])
    measured = None
    if audits[0].measured is not None:
        measured = {f"measured ({audits[0].gamma_mode} gamma)": (np.array([a.measured.mean for a in audits]),
                                                                np.array([a.measured.se for a in audits]))}
    a0 = audits[0]
    where = f"{a0.height}x{a0.width} map" if sweep == "block-size" else f"block {a0.block_size}"
    fig = figure_gamma_sweep(xs, series, target=a0.p, measured=measured,
                             title=f"Realized drop rate, target {100 * a0.p:g}% ({where})",
                             xlabel="block size" if sweep == "block-size" else "feature map size")
    _save(fig, path)


def _check_output_path(path: Path, option: str, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse an output that would overwrite an input, has an unknown extension, or has no directory."""
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        fail(f"{option} {str(path)!r}: the file must end in .png, .svg or .pdf", 2)
    if path.is_dir():
        fail(f"{option} {str(path)!r} is a directory; give a file name", 2)
    if not path.resolve().parent.is_dir():
        fail(f"{option} {str(path)!r}: directory {str(path.parent)!r} does not exist", 2)
    for i in inputs:
        if i.exists() and path.exists() and path.resolve() == i.resolve():
            fail(f"{option} {str(path)!r} is the input image; choose another output file", 2)


def _save(fig, path: Path, dpi: int = 150) -> None:
    from dropblock.viz import save_figure

    try:
        save_figure(fig, path, dpi=dpi)
    except (OSError, ValueError) as e:
        fail(f"cannot write {str(path)!r}: {e}", 1)


# ---- images: show, compare, schedule -----------------------------------------------------------------

METHOD_HELP = "dropblock, dropout or cutout."
BLOCK_HELP = ("DropBlock block side: in pixels of the input image \\[default: 1/8 of its shorter side]; "
              "with --layer, in feature-map units \\[default: 7, clipped to the map].")

# Options that show and compare share, declared once.
KeepProbOpt = Annotated[Optional[float], typer.Option("--keep-prob", help="Target keep probability (1 - drop rate).")]
BlockOpt = Annotated[Optional[int], typer.Option("--block-size", "-b", help=BLOCK_HELP, show_default=False)]
DpiOpt = Annotated[Optional[int], typer.Option(
    "--dpi", help="Resolution of raster figures \\[default: 150; 110 with --layer, whose figure is larger].",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of the table.")]
LayerOpt = Annotated[Optional[str], typer.Option(
    "--layer", "-l", help="Work on this layer's feature maps of a pretrained CNN (see `dropblock layers`).")]
ModelOpt = Annotated[str, typer.Option("--model", help="CNN for --layer: efficientnet-lite0, resnet18 or resnet50.")]
WeightsOpt = Annotated[Optional[Path], typer.Option(
    "--weights", help="State-dict file for the model (resnets: torchvision checkpoints).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Allow downloading missing resnet weights through torch.hub.")]
SharedOpt = Annotated[bool, typer.Option("--shared-channels", help="With --layer: one mask for all channels.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="With --layer: cpu, cuda or auto.")]


def _load(image: Path):
    from dropblock.images import ImageLoadError, load_image

    try:
        loaded = load_image(image)
    except ImageLoadError as e:
        fail(str(e), 1)
    for note in loaded.notes:
        _stderr().print(f"[dim]note: {note}[/dim]")
    return loaded


def _default_output(image: Optional[Path], suffix: str) -> Path:
    stem = image.stem if image is not None else "dropblock"
    return Path.cwd() / f"{stem}-{suffix}.png"


def _check_common(method: Optional[str], gamma_mode: str, dpi: Optional[int], seed: int) -> None:
    from dropblock.methods import METHODS

    if method is not None and method not in METHODS:
        fail(f"--method must be one of {', '.join(METHODS)}; got {method!r}", 2)
    if gamma_mode not in ("paper", "exact"):
        fail(f"--gamma must be paper or exact, got {gamma_mode!r}", 2)
    check_positive(dpi, "--dpi", 10)
    check_positive(seed, "--seed", 0)


def _show_rows(d, p: float, output: Path, loaded) -> list[tuple[str, str]]:
    from dropblock.image_views import NAMES, describe
    from dropblock.tables import pct

    h, w = loaded.pixels.shape[:2]
    return [
        ("image", f"{loaded.path} ({w}x{h}, {loaded.format})"),
        ("method", f"{NAMES[d.method]}: {describe(d.method, d.params, d.gamma)}"),
        ("target drop rate", pct(p)),
        ("gamma", "—" if d.gamma is None else f"{d.gamma:.6g}"),
        ("expected drop rate", pct(d.expected_drop_rate)),
        ("realized drop rate", pct(d.drop_rate)),
        ("output", str(output)),
    ]


def _draw_json(d, p: float, output: Path, seed: int) -> dict:
    return {"method": d.method, "drop_rate_target": p, "gamma": d.gamma, "expected_drop_rate": d.expected_drop_rate,
            "realized_drop_rate": d.drop_rate, "output": str(output), "seed": seed, "params": d.params}


@app.command()
def show(
    image: Path = typer.Argument(..., help="Image file (JPEG, PNG, GIF, TIFF, WebP, BMP).", show_default=False),
    method: str = typer.Option("dropblock", "--method", "-m", help=METHOD_HELP),
    drop_rate: Optional[float] = typer.Option(None, "--drop-rate", "-p", help="Target drop rate \\[default: 0.1]."),
    keep_prob: KeepProbOpt = None,
    block_size: BlockOpt = None,
    gamma_mode: str = typer.Option("paper", "--gamma", help="paper (Equation 1) or exact (expected drop rate = target)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same mask."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Figure file (.png, .svg, .pdf) \\[default: ./IMAGE-METHOD.png].", show_default=False),
    dpi: DpiOpt = None,
    as_json: JsonOpt = False,
    layer: LayerOpt = None,
    model: ModelOpt = "efficientnet-lite0",
    weights: WeightsOpt = None,
    download: DownloadOpt = False,
    samples: int = typer.Option(1, "--samples", "-n", help="With --layer: average drop rate, KL and top-1 over N masks."),
    shared_channels: SharedOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Draw the image, the mask and the masked result to a figure, with a short table."""
    _check_common(method, gamma_mode, dpi, seed)
    p = drop_rate_from(drop_rate, keep_prob)
    check_positive(block_size, "--block-size")
    check_positive(samples, "--samples")
    output = output or _default_output(image, method if layer is None else f"{method}-{layer}")
    _check_output_path(output, "--output", (image,))
    if layer is not None:
        _show_layer(image, [method], p, block_size, gamma_mode, seed, output, dpi or 110, as_json, layer, model, weights,
                    download, samples, shared_channels, device)
        return
    loaded = _load(image)
    from dropblock.image_views import default_block_size, draw_on_image, show_figure
    from dropblock.sampling import make_generator

    h, w = loaded.pixels.shape[:2]
    b = block_size or default_block_size(h, w)
    if method == "dropblock" and b > min(h, w):
        _stderr().print(f"[yellow]note:[/yellow] block {b} px is larger than the {w}x{h} image: clipped to it")
    d = draw_on_image(method, h, w, p, block_size=b, gamma=gamma_mode, generator=make_generator(seed, "cpu"))
    _save(show_figure(loaded.pixels, loaded.path.name, d, p), output, dpi or 150)
    if as_json:
        _print_json(_draw_json(d, p, output, seed))
        return
    from dropblock.image_views import NAMES
    from dropblock.tables import key_value

    _stdout().print(key_value(f"dropblock show: {NAMES[d.method]}", _show_rows(d, p, output, loaded)))


@app.command()
def compare(
    image: Path = typer.Argument(..., help="Image file (JPEG, PNG, GIF, TIFF, WebP, BMP).", show_default=False),
    drop_rate: Optional[float] = typer.Option(None, "--drop-rate", "-p", help="Target drop rate for every method \\[default: 0.1]."),
    keep_prob: KeepProbOpt = None,
    block_size: BlockOpt = None,
    gamma_mode: str = typer.Option("paper", "--gamma", help="DropBlock's gamma: paper (Equation 1) or exact."),
    samples: int = typer.Option(0, "--samples", "-n", help="Also draw N masks per method: mean realized drop rate ± standard error."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same masks."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Figure file (.png, .svg, .pdf) \\[default: ./IMAGE-compare.png].", show_default=False),
    dpi: DpiOpt = None,
    as_json: JsonOpt = False,
    layer: LayerOpt = None,
    model: ModelOpt = "efficientnet-lite0",
    weights: WeightsOpt = None,
    download: DownloadOpt = False,
    shared_channels: SharedOpt = False,
    device: DeviceOpt = "cpu",
) -> None:
    """DropBlock, dropout and Cutout side by side at the same target drop rate."""
    _check_common(None, gamma_mode, dpi, seed)
    p = drop_rate_from(drop_rate, keep_prob)
    check_positive(block_size, "--block-size")
    check_positive(samples, "--samples", 0)
    output = output or _default_output(image, "compare" if layer is None else f"compare-{layer}")
    _check_output_path(output, "--output", (image,))
    if layer is not None:
        from dropblock.methods import METHODS

        _show_layer(image, list(METHODS), p, block_size, gamma_mode, seed, output, dpi or 110, as_json, layer, model,
                    weights, download, max(samples, 1), shared_channels, device)
        return
    loaded = _load(image)
    from dropblock.image_views import compare_figure, compare_on_image, default_block_size

    h, w = loaded.pixels.shape[:2]
    b = block_size or default_block_size(h, w)
    with _ProgressBar(3 * samples, "drawing masks", show=samples * h * w > 20_000_000) as bar:
        summaries = compare_on_image(loaded.pixels, p, block_size=b, gamma=gamma_mode, seed=seed, samples=samples,
                                     progress=bar.advance)
    _save(compare_figure(loaded.pixels, loaded.path.name, summaries, p), output, dpi or 150)
    if as_json:
        rows = []
        for s in summaries:
            row = _draw_json(s.draw, p, output, seed)
            row.update({"samples": s.samples, "mean_drop_rate": s.mean, "mean_drop_rate_se": s.se})
            rows.append(row)
        _print_json({"drop_rate_target": p, "output": str(output), "seed": seed, "methods": rows})
        return
    from dropblock.image_views import NAMES, describe
    from dropblock.tables import columns, pct

    headers = ["method", "parameters", "gamma", "expected", "this mask"] + ([f"mean of {samples:,}"] if samples else [])
    rows = []
    for s in summaries:
        d = s.draw
        row = [NAMES[d.method], describe(d.method, d.params, d.gamma), "—" if d.gamma is None else f"{d.gamma:.4g}", pct(d.expected_drop_rate),
               pct(d.drop_rate)]
        if samples:
            row.append(f"{pct(s.mean)} ± {pct(s.se, 3)}")
        rows.append(row)
    console = _stdout()
    console.print(columns(f"{loaded.path.name}: target drop rate {pct(p)}", headers, rows, right_from=2))
    console.print(f"figure written to {output}")


@app.command()
def schedule(
    image: Optional[Path] = typer.Argument(None, help="Optional image: show the mask at a few points of the schedule.", show_default=False),
    keep_prob: float = typer.Option(0.9, "--keep-prob", help="Target keep_prob reached at the end of the schedule."),
    steps: int = typer.Option(10000, "--steps", help="Training steps over which keep_prob falls linearly from 1.0."),
    snapshots: int = typer.Option(4, "--snapshots", help="How many points of the schedule to show masks at."),
    block_size: BlockOpt = None,
    gamma_mode: str = typer.Option("paper", "--gamma", help="paper (Equation 1) or exact."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the masks."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Figure file (.png, .svg, .pdf) \\[default: ./IMAGE-schedule.png].", show_default=False),
    dpi: int = typer.Option(150, "--dpi", help="Resolution of raster figures."),
    as_json: JsonOpt = False,
) -> None:
    """Scheduled DropBlock: keep_prob against training step, and the mask at a few steps."""
    _check_common(None, gamma_mode, dpi, seed)
    if not 0.0 < keep_prob <= 1.0:
        fail(f"--keep-prob must be in (0, 1], got {keep_prob:g}", 2)
    check_positive(steps, "--steps")
    check_positive(snapshots, "--snapshots")
    if snapshots > 8:
        fail(f"--snapshots must be at most 8, got {snapshots}", 2)
    check_positive(block_size, "--block-size")
    output = output or _default_output(image, "schedule")
    _check_output_path(output, "--output", (image,) if image else ())
    pixels = None
    if image is not None:
        pixels = _load(image).pixels
    from dropblock.image_views import default_block_size, schedule_figure, schedule_on_image

    b = block_size or (default_block_size(*pixels.shape[:2]) if pixels is not None else 7)
    points = schedule_on_image(pixels, keep_prob, steps, snapshots, block_size=b, gamma=gamma_mode, seed=seed)
    _save(schedule_figure(pixels, keep_prob, steps, points), output, dpi)
    rows = [{"step": pt.step, "keep_prob": pt.keep_prob,
             "gamma": None if pt.draw is None else pt.draw.gamma,
             "expected_drop_rate": None if pt.draw is None else pt.draw.expected_drop_rate,
             "realized_drop_rate": None if pt.draw is None else pt.draw.drop_rate} for pt in points]
    if as_json:
        _print_json({"keep_prob": keep_prob, "steps": steps, "block_size": b, "output": str(output), "seed": seed,
                     "points": rows})
        return
    from dropblock.tables import columns, pct

    table = columns(f"keep_prob from 1.0 to {keep_prob:g} over {steps:,} steps",
                    ["step", "keep_prob", "gamma", "expected drop", "this mask"],
                    [[f"{r['step']:,}", f"{r['keep_prob']:.4f}", "—" if r["gamma"] is None else f"{r['gamma']:.4g}",
                      pct(r["expected_drop_rate"]), pct(r["realized_drop_rate"])] for r in rows])
    console = _stdout()
    console.print(table)
    console.print(f"figure written to {output}")


@app.command()
def layers(
    model: str = typer.Option("efficientnet-lite0", "--model", help="efficientnet-lite0, resnet18 or resnet50."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {name, type, shape, dropblock_ok}."),
) -> None:
    """The layers --layer can pick: type, output shape (C x H x W) at a 224 input, where DropBlock makes sense."""
    from dropblock.models import UnknownNameError, resolve_model

    try:
        name = resolve_model(model)
    except UnknownNameError as e:
        fail(str(e), 2)
    from dropblock.models import layer_table

    table = layer_table(name)
    if as_json:
        _print_json([{"name": li.name, "type": li.type, "shape": list(li.shape), "dropblock_ok": li.dropblock_ok}
                     for li in table])
        return
    from dropblock.tables import columns

    rows = [[li.name, li.type, " x ".join(map(str, li.shape)), "✓" if li.dropblock_ok else "—"] for li in table]
    _stdout().print(columns(f"{name}: layers at a 224x224 input", ["layer", "type", "output (C x H x W)", "DropBlock"],
                            rows, right_from=2))


def _show_layer(image, methods, p, block_size, gamma_mode, seed, output, dpi, as_json, layer, model, weights,
                download, samples, shared_channels, device) -> None:
    """show/compare --layer: the regularizer on one layer's feature maps of a pretrained CNN."""
    from dropblock.models import UnknownNameError, resolve_layer, resolve_model

    try:
        model_name = resolve_model(model)
        layer_name = resolve_layer(model_name, layer)
    except UnknownNameError as e:
        fail(str(e), 2)
    if weights is not None and not weights.is_file():
        fail(f"--weights {str(weights)!r}: no such file", 2)
    loaded = _load(image)
    dev = resolve_device(device)
    from dropblock.models import WeightsError, load_model

    b = block_size or 7
    try:
        net = load_model(model_name, weights=weights, download=download, device=dev)
    except WeightsError as e:
        fail(str(e), 1)
    from dropblock.effect import effect_json, layer_effect

    effects = []
    with _ProgressBar(samples * len(methods), "masks through the network", show=samples * len(methods) > 8) as bar:
        for method in methods:
            effects.append(layer_effect(net, model_name, loaded.pixels, layer_name, method, p, block_size=b,
                                        gamma=gamma_mode, shared_channels=shared_channels, samples=samples,
                                        seed=seed, device=dev, progress=bar.advance))
    c, h, w = effects[0].feature_shape
    if "dropblock" in methods and b > min(h, w):
        _stderr().print(f"[yellow]warning:[/yellow] block {b} is larger than the {h}x{w} map of {layer_name}: "
                        f"clipped to {min(b, h)}x{min(b, w)}")
    from dropblock.feature_views import feature_compare_figure, feature_show_figure

    name = loaded.path.name
    fig = feature_show_figure(effects[0], name) if len(methods) == 1 else feature_compare_figure(effects, name)
    _save(fig, output, dpi)
    if as_json:
        rows = [dict(effect_json(e), output=str(output), seed=seed) for e in effects]
        if len(rows) == 1:
            _print_json(rows[0])
        else:
            _print_json({"drop_rate_target": p, "output": str(output), "seed": seed, "model": model_name,
                         "layer": layer_name, "feature_shape": [c, h, w], "methods": rows})
        return
    console = _stdout()
    if len(effects) == 1:
        console.print(_layer_show_table(effects[0], name, output))
    else:
        console.print(_layer_compare_table(effects, name))
        console.print(f"figure written to {output}")


def _pred(q) -> str:
    return f"{q.label} ({100 * q.prob:.1f}%)"


def _stat(s, digits: int = 2, percent: bool = True) -> str:
    if percent:
        return f"{100 * s.mean:.{digits}f}% ± {100 * s.se:.{digits}f}%"
    return f"{s.mean:.4g} ± {s.se:.2g}"


def _layer_show_table(e, name: str, output: Path):
    from dropblock.image_views import NAMES, describe
    from dropblock.tables import key_value, pct

    c, h, w = e.feature_shape
    rows = [
        ("image", name),
        ("model / layer", f"{e.model} / {e.layer} ({c}x{h}x{w})"),
        ("method", f"{NAMES[e.method]}: {describe(e.method, e.params, e.gamma, unit='cells')}"),
        ("target drop rate", pct(e.p)),
        ("gamma", "—" if e.gamma is None else f"{e.gamma:.6g}"),
        ("expected drop rate", pct(e.expected_drop_rate)),
        ("realized drop rate", pct(e.realized_drop_rate)),
        ("top-1 before", _pred(e.predictions_before[0])),
        ("top-1 after", _pred(e.predictions_after[0])),
        ("KL(before ‖ after)", f"{e.kl_divergence:.4g} nats"),
    ]
    if e.samples > 1:
        rows += [
            (f"over {e.samples} masks: drop rate", _stat(e.drop_rate)),
            ("  KL(before ‖ after)", _stat(e.kl, percent=False) + " nats"),
            (f"  P({e.predictions_before[0].label}) after", _stat(e.top1_prob_after, 1)),
            ("  top-1 changed", _stat(e.top1_changed, 1)),
        ]
    rows.append(("output", str(output)))
    return key_value(f"dropblock show --layer: {NAMES[e.method]}", rows)


def _layer_compare_table(effects, name: str):
    from dropblock.image_views import NAMES, describe
    from dropblock.tables import columns, pct

    e0 = effects[0]
    c, h, w = e0.feature_shape
    top = e0.predictions_before[0]
    n = e0.samples
    headers = ["method", "parameters", "expected", f"drop rate ({n} masks)", f"P({top.label}) after", "top-1 changed",
               "KL (nats)"]
    rows = [[NAMES[e.method], describe(e.method, e.params, e.gamma, unit="cells"), pct(e.expected_drop_rate),
             _stat(e.drop_rate), _stat(e.top1_prob_after, 1), _stat(e.top1_changed, 0), _stat(e.kl, percent=False)]
            for e in effects]
    return columns(f"{name} on {e0.model} {e0.layer} ({c}x{h}x{w}): before, {_pred(top)}; target drop rate {pct(e0.p)}",
                   headers, rows, right_from=2)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
