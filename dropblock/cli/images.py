"""``show``, ``compare`` and ``schedule`` on an image (sizes in pixels); with ``--layer``, show and compare
hand over to :mod:`dropblock.cli.layers`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dropblock.cli.layers import LayerRequest, run_on_layer
from dropblock.cli.models import model_choice
from dropblock.cli.options import (
    GAMMA_HELP, METHOD_HELP, BlockOpt, CamLayerOpt, CamOpt, ClassNamesOpt, ClassOpt, DeviceOpt, DownloadOpt, DpiOpt,
    InputSizeOpt, JsonOpt, KeepProbOpt, LayerOpt, MeanOpt, ModelOpt, ProgressBar, SeedOpt, SharedOpt, StdOpt,
    WeightsOpt, check_at_most, check_cam_options,
    check_figure_options, check_output_path, check_positive, default_output, drop_rate_from, fail,
    load_image_or_fail, note_if_clipped, save_or_fail,
)
from dropblock.cli.report import columns, key_value, pct, print_json, stdout_console
from dropblock.limits import MAX_SCHEDULE_STEPS

ImageArg = typer.Argument(..., help="Image file (JPEG, PNG, GIF, TIFF, WebP, BMP).", show_default=False)


def _draw_json(draw, p: float, output: Path, seed: int) -> dict:
    return {"method": draw.method, "drop_rate_target": p, "gamma": draw.gamma,
            "expected_drop_rate": draw.expected_drop_rate, "realized_drop_rate": draw.drop_rate,
            "output": str(output), "seed": seed, "params": draw.params}


def _show_rows(draw, p: float, output: Path, loaded) -> list[tuple[str, str]]:
    from dropblock.viz.labels import METHOD_LABELS, describe

    return [
        ("image", f"{loaded.path} ({loaded.width}x{loaded.height}, {loaded.format})"),
        ("method", f"{METHOD_LABELS[draw.method]}: {describe(draw.method, draw.params, draw.gamma)}"),
        ("target drop rate", pct(p)),
        ("gamma", "—" if draw.gamma is None else f"{draw.gamma:.6g}"),
        ("expected drop rate", pct(draw.expected_drop_rate)),
        ("realized drop rate", pct(draw.drop_rate)),
        ("output", str(output)),
    ]


def show(
    image: Path = ImageArg,
    method: str = typer.Option("dropblock", "--method", "-m", help=METHOD_HELP),
    drop_rate: Optional[float] = typer.Option(None, "--drop-rate", "-p", help="Target drop rate \\[default: 0.1]."),
    keep_prob: KeepProbOpt = None,
    block_size: BlockOpt = None,
    gamma_mode: str = typer.Option("paper", "--gamma", help=GAMMA_HELP),
    seed: SeedOpt = 0,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Figure file (.png, .svg, .pdf) \\[default: ./IMAGE-METHOD.png].", show_default=False),
    dpi: DpiOpt = None,
    as_json: JsonOpt = False,
    layer: LayerOpt = None,
    model: ModelOpt = "efficientnet-lite0",
    weights: WeightsOpt = None,
    download: DownloadOpt = False,
    input_size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    class_names: ClassNamesOpt = None,
    samples: int = typer.Option(1, "--samples", "-n", help="With --layer: average drop rate, KL and top-1 over N masks."),
    shared_channels: SharedOpt = False,
    device: DeviceOpt = "cpu",
    cam: CamOpt = None,
    cam_layer: CamLayerOpt = None,
    class_: ClassOpt = None,
) -> None:
    """Draw the image, the mask and the masked result to a figure, with a short table."""
    check_figure_options(gamma_mode, dpi, seed, method, feature_maps=layer is not None)
    check_cam_options(layer, cam, cam_layer, class_)
    p = drop_rate_from(drop_rate, keep_prob)
    check_positive(block_size, "--block-size")
    check_positive(samples, "--samples")
    choice = model_choice(model, weights, download, input_size, mean, std, class_names, used=layer is not None)
    output = output or default_output(image, method if layer is None else f"{method}-{layer}")
    check_output_path(output, "--output", (image,))
    if layer is not None:
        run_on_layer(LayerRequest(
            image=image, methods=(method,), p=p, block_size=block_size, gamma_mode=gamma_mode, seed=seed,
            output=output, dpi=dpi or 110, as_json=as_json, layer=layer, model=choice, samples=samples,
            shared_channels=shared_channels, device=device, cam=cam, cam_layer=cam_layer, class_=class_))
        return
    loaded = load_image_or_fail(image)
    from dropblock.methods import default_block_size, draw_on_image
    from dropblock.viz.labels import METHOD_LABELS
    from dropblock.rng import make_generator
    from dropblock.viz import show_figure

    h, w = loaded.height, loaded.width
    b = block_size or default_block_size(h, w)
    if method == "dropblock":
        note_if_clipped(b, h, w, " px", "image")
    draw = draw_on_image(method, h, w, p, block_size=b, gamma=gamma_mode, generator=make_generator(seed, "cpu"))
    save_or_fail(show_figure(loaded.pixels, loaded.path.name, draw, p, dpi=dpi or 150), output, dpi or 150)
    if as_json:
        print_json(_draw_json(draw, p, output, seed))
        return
    stdout_console().print(key_value(f"dropblock show: {METHOD_LABELS[draw.method]}", _show_rows(draw, p, output, loaded)))


def compare(
    image: Path = ImageArg,
    drop_rate: Optional[float] = typer.Option(None, "--drop-rate", "-p", help="Target drop rate for every method \\[default: 0.1]."),
    keep_prob: KeepProbOpt = None,
    block_size: BlockOpt = None,
    gamma_mode: str = typer.Option("paper", "--gamma", help="DropBlock's gamma: paper (Equation 1) or exact."),
    samples: int = typer.Option(0, "--samples", "-n", help="Also draw N masks per method: mean realized drop rate ± standard error."),
    seed: SeedOpt = 0,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Figure file (.png, .svg, .pdf) \\[default: ./IMAGE-compare.png].", show_default=False),
    dpi: DpiOpt = None,
    as_json: JsonOpt = False,
    layer: LayerOpt = None,
    model: ModelOpt = "efficientnet-lite0",
    weights: WeightsOpt = None,
    download: DownloadOpt = False,
    input_size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    class_names: ClassNamesOpt = None,
    shared_channels: SharedOpt = False,
    device: DeviceOpt = "cpu",
    cam: CamOpt = None,
    cam_layer: CamLayerOpt = None,
    class_: ClassOpt = None,
) -> None:
    """DropBlock, dropout and Cutout side by side at the same target drop rate."""
    check_figure_options(gamma_mode, dpi, seed)
    check_cam_options(layer, cam, cam_layer, class_)
    p = drop_rate_from(drop_rate, keep_prob)
    check_positive(block_size, "--block-size")
    check_positive(samples, "--samples", 0)
    choice = model_choice(model, weights, download, input_size, mean, std, class_names, used=layer is not None)
    output = output or default_output(image, "compare" if layer is None else f"compare-{layer}")
    check_output_path(output, "--output", (image,))
    from dropblock.method_names import METHODS

    if layer is not None:
        run_on_layer(LayerRequest(
            image=image, methods=METHODS, p=p, block_size=block_size, gamma_mode=gamma_mode, seed=seed,
            output=output, dpi=dpi or 110, as_json=as_json, layer=layer, model=choice, samples=max(samples, 1),
            shared_channels=shared_channels, device=device, cam=cam, cam_layer=cam_layer, class_=class_))
        return
    loaded = load_image_or_fail(image)
    from dropblock.methods import compare_on_image, default_block_size
    from dropblock.viz import compare_figure

    h, w = loaded.height, loaded.width
    b = block_size or default_block_size(h, w)
    with ProgressBar(3 * samples, "drawing masks", show=samples * h * w > 20_000_000) as bar:
        summaries = compare_on_image(h, w, p, block_size=b, gamma=gamma_mode, seed=seed, samples=samples,
                                     progress=bar.advance)
    save_or_fail(compare_figure(loaded.pixels, loaded.path.name, summaries, p, dpi=dpi or 150), output, dpi or 150)
    if as_json:
        print_json(_compare_json(summaries, p, output, seed))
        return
    console = stdout_console()
    console.print(_compare_table(summaries, loaded.path.name, p, samples))
    console.print(f"figure written to {output}")


def _compare_json(summaries, p: float, output: Path, seed: int) -> dict:
    rows = []
    for summary in summaries:
        row = _draw_json(summary.draw, p, output, seed)
        rates = summary.rates
        row.update({"samples": 0 if rates is None else rates.n, "mean_drop_rate": None if rates is None else rates.mean,
                    "mean_drop_rate_se": None if rates is None else rates.se})
        rows.append(row)
    return {"drop_rate_target": p, "output": str(output), "seed": seed, "methods": rows}


def _compare_table(summaries, name: str, p: float, samples: int):
    from dropblock.viz.labels import METHOD_LABELS, describe

    headers = ["method", "parameters", "gamma", "expected", "this mask"] + ([f"mean of {samples:,}"] if samples else [])
    rows = []
    for summary in summaries:
        draw = summary.draw
        row = [METHOD_LABELS[draw.method], describe(draw.method, draw.params, draw.gamma),
               "—" if draw.gamma is None else f"{draw.gamma:.4g}", pct(draw.expected_drop_rate), pct(draw.drop_rate)]
        if summary.rates is not None:
            row.append(f"{pct(summary.rates.mean)} ± {pct(summary.rates.se, 3)}")
        rows.append(row)
    return columns(f"{name}: target drop rate {pct(p)}", headers, rows, right_from=2)


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
    check_figure_options(gamma_mode, dpi, seed)
    if not 0.0 < keep_prob <= 1.0:
        fail(f"--keep-prob must be in (0, 1], got {keep_prob:g}", 2)
    check_positive(steps, "--steps")
    check_at_most(steps, MAX_SCHEDULE_STEPS, "--steps", "steps")
    check_positive(snapshots, "--snapshots")
    if snapshots > 8:
        fail(f"--snapshots must be at most 8, got {snapshots}", 2)
    check_positive(block_size, "--block-size")
    output = output or default_output(image, "schedule")
    check_output_path(output, "--output", (image,) if image else ())
    pixels = None if image is None else load_image_or_fail(image).pixels
    from dropblock.methods import default_block_size, schedule_on_image
    from dropblock.viz import schedule_figure

    size = None if pixels is None else pixels.shape[:2]
    b = block_size or (7 if size is None else default_block_size(*size))
    points = schedule_on_image(size, keep_prob, steps, snapshots, block_size=b, gamma=gamma_mode, seed=seed)
    save_or_fail(schedule_figure(pixels, keep_prob, steps, points, dpi=dpi), output, dpi)
    _print_schedule(points, keep_prob, steps, b, output, seed, as_json)


def _print_schedule(points, keep_prob: float, steps: int, block_size: int, output: Path, seed: int,
                    as_json: bool) -> None:
    rows = [{"step": pt.step, "keep_prob": pt.keep_prob,
             "gamma": None if pt.draw is None else pt.draw.gamma,
             "expected_drop_rate": None if pt.draw is None else pt.draw.expected_drop_rate,
             "realized_drop_rate": None if pt.draw is None else pt.draw.drop_rate} for pt in points]
    if as_json:
        print_json({"keep_prob": keep_prob, "steps": steps, "block_size": block_size, "output": str(output),
                    "seed": seed, "points": rows})
        return
    table = columns(f"keep_prob from 1.0 to {keep_prob:g} over {steps:,} steps",
                    ["step", "keep_prob", "gamma", "expected drop", "this mask"],
                    [[f"{r['step']:,}", f"{r['keep_prob']:.4f}", "—" if r["gamma"] is None else f"{r['gamma']:.4g}",
                      pct(r["expected_drop_rate"]), pct(r["realized_drop_rate"])] for r in rows])
    console = stdout_console()
    console.print(table)
    console.print(f"figure written to {output}")
