"""``dropblock sweep``: the paper's Figure 5 on your own images. Regularizers applied at inference to one
layer or several, swept over keep_prob, block size and method across images; a figure (by depth for
several layers), tables of means and of paired differences or JSON, and an optional CSV of per-image rows
that a stopped run can resume."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

from dropblock.cli.app import stopped_word
from dropblock.cli.models import fail_for, model_choice
from dropblock.cli.options import (
    GAMMA_HELP, ClassNamesOpt, DownloadOpt, InputSizeOpt, JsonOpt, MeanOpt, ModelOpt, ProgressBar, StdOpt, WeightsOpt,
    check_at_most, check_dpi, check_gamma_mode, check_positive, fail, stderr_is_terminal,
)
from dropblock.cli.ranks import image_rows, ranked
from dropblock.cli.report import note, stderr_console
from dropblock.cli.sweep_files import check_files, exclude_outputs, load_layers, open_csv, run_settings
from dropblock.cli.sweep_report import finish

IMAGES_HELP = "Image files, folders (searched recursively) or globs such as 'photos/*.jpg'."
CSV_HELP = ("Write one row per image, layer, method, block size and keep_prob to this CSV as each image finishes "
            "(it must not exist, unless --resume).")
METHODS_HELP = ("Regularizers, comma-separated (Cutout's side follows the drop rate); also cutout-input (Cutout on "
                "the network's input) and cutout-input+dropblock (both).")
OUTPUT_HELP = "Figure file (.png, .svg, .pdf) \\[default: ./sweep-LAYER.png, or ./sweep-depth.png for several layers]."
LAYER_HELP = ("The layer whose output is masked (see `dropblock layers`); repeat it, or give a glob such as "
              "'blocks.*' (matched against `dropblock layers --filter '*'`), to sweep several layers.")
PER_PASS_HELP = ("Images whose edits share a forward pass when one image's edits at a layer fill less than a batch "
                 "of 32 (a few masks or settings) \\[default: as many as fill one on cuda and mps; 1 on the CPU, where "
                 "a shared pass was measured slower].")
PER_PASS_OPTION = typer.Option(None, "--images-per-pass", min=1, help=PER_PASS_HELP, show_default=False)
BASELINE_HELP = ("The series the others are compared with, image by image (paired): a method, or a block method "
                 "with its size, e.g. dropblock:1 \\[default: dropout, or the first series of a run without it].")


@dataclass
class Progress:
    """What the run has done so far: rows (previous and new), skipped files, images finished."""

    rows: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    images_done: int = 0
    interrupted: bool = False


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{option} must be numbers separated by commas, e.g. 1,0.9,0.8; got {text!r}", 2)
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if not values or bad:
        fail(f"{option} must be keep probabilities in (0, 1], e.g. 1,0.9,0.8; got {text!r}", 2)
    return list(dict.fromkeys(values))


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"{option} must be whole numbers separated by commas, e.g. 1,3,5,7; got {text!r}", 2)
    if not values or min(values) < 1:
        fail(f"{option} must be block sizes >= 1, e.g. 1,3,5,7; got {text!r}", 2)
    return sorted(set(values))


def _methods(text: str) -> list[str]:
    from dropblock.sweep import SWEEP_METHODS

    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in SWEEP_METHODS]
    if not values or bad:
        fail(f"--methods must be some of {','.join(SWEEP_METHODS)}; got {text!r}", 2)
    return list(dict.fromkeys(values))


def _read_labels(labels: Optional[Path], class_names, paths: list[Path]):
    """The labels file's {image: class}, or None; a warning when it names none of ``paths``."""
    if labels is None:
        return None
    from dropblock.labels import LabelError, read_labels, rows_matched

    try:
        table = read_labels(labels, list(class_names))
    except LabelError as e:
        fail(f"--labels: {e}", 2)
    if paths and not rows_matched(paths, table):
        warn(f"--labels {str(labels)!r}: none of its {len(table)} rows names one of the {len(paths)} images (rows "
             "match by path, file name or name without extension), so it gives no accuracy")
    return table


def warn(text: str) -> None:
    """One ``warning:`` line on stderr."""
    stderr_console().print(f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)


@ranked({"csv_path": None, "resume": False})  # under torchrun only rank 0 opens the CSV
def sweep(
    images: list[str] = typer.Argument(..., help=IMAGES_HELP, show_default=False),
    layer: list[str] = typer.Option(..., "--layer", "-l", help=LAYER_HELP, show_default=False),
    model: ModelOpt = "efficientnet-lite0",
    weights: WeightsOpt = None,
    download: DownloadOpt = False,
    input_size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    class_names: ClassNamesOpt = None,
    keep_probs: str = typer.Option("1,0.95,0.9,0.85,0.8,0.75,0.7", "--keep-probs", help="keep_prob values, comma-separated."),
    block_sizes: str = typer.Option("1,3,5,7", "--block-sizes", help="DropBlock block sizes in feature-map cells."),
    methods: str = typer.Option("dropblock,dropout,spatial-dropout,cutout", "--methods", help=METHODS_HELP),
    baseline: Optional[str] = typer.Option(None, "--baseline", help=BASELINE_HELP, show_default=False),
    masks: int = typer.Option(16, "--masks", "-n", help="Masks per image and setting."),
    gamma_mode: str = typer.Option("paper", "--gamma", help=GAMMA_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with the columns image,label (class index or "
                                          "name) for accuracy; folders named by ImageNet WordNet id work without it."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help=CSV_HELP),
    resume: bool = typer.Option(False, "--resume", help="Skip what the --csv file holds and append the rest."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help=OUTPUT_HELP, show_default=False),
    dpi: Optional[int] = typer.Option(None, "--dpi", help="Resolution of a raster figure \\[default: 150].",
                                      show_default=False),
    as_json: JsonOpt = False,
    seed: int = typer.Option(0, "--seed", min=0, max=2**64 - 1, help="Random seed, 0 to 2**64 - 1: an image's masks "
                             "come from it, the image's bytes and the setting, so they never depend on the other images."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    workers: int = typer.Option(0, "--workers", help="Processes that decode images ahead (0: none)."),
    images_per_pass: Optional[int] = PER_PASS_OPTION,
) -> None:
    """Regularizers at inference on one layer or several, across images: agreement, KL, accuracy and drop rate
    against keep_prob (the paper's Figure 5), or against depth; each series minus a baseline, image by image."""
    from dropblock.sweep import settings_grid

    lists = (_methods(methods), _ints(block_sizes, "--block-sizes"), _floats(keep_probs, "--keep-probs"))
    base = _baseline(baseline, settings := settings_grid(*lists))
    check_positive(masks, "--masks")
    check_positive(workers, "--workers", 0)
    check_dpi(dpi)
    check_gamma_mode(gamma_mode)
    choice = model_choice(model, weights, download, input_size, mean, std, class_names)
    output = output or _default_output(layer)
    check_files(csv_path, resume, output, {"--labels": labels, "--weights": weights, "--class-names": class_names})
    stage = Stage(csv_path)
    try:
        paths = _find(images, output, csv_path)
        stage.images = len(paths)
        model_name, picked, net, dev = load_layers(choice, layer, device, warn)
        plan = dict(model=model_name, layer_names=[p.name for p in picked], net=net, device=dev, settings=settings,
                    masks=masks, seed=seed, gamma=gamma_mode, labels=_read_labels(labels, net.class_names, paths),
                    baseline=base, layer_index={p.name: p.index for p in picked}, cost=_costs(net, picked),
                    workers=workers, images_per_pass=_per_pass(images_per_pass, settings, masks, dev))
        log = open_csv(csv_path, resume, run_settings(plan, *lists))
        with log if log is not None else nullcontext():
            stage.log = log
            state = _run(paths, plan, log, stage)
            finish(state, plan, paths, output, dpi or 150, as_json, csv_path)
    except KeyboardInterrupt:
        note(stage.interrupted())
        raise typer.Exit(130) from None


@dataclass
class Stage:
    """Where the run is, to say what was kept when Ctrl-C comes outside the per-image loop."""

    csv_path: Optional[Path]
    images: int = 0
    log: object = None
    drawing: bool = False

    def interrupted(self) -> str:
        held = self.log is not None and (self.log.rows_written or self.log.previous)
        csv = f"{str(self.csv_path)!r}" if self.csv_path is not None else ""
        how = stopped_word()  # Ctrl-C or SIGTERM
        if self.drawing:
            kept = f"; {csv} holds every image: rerun with --resume to draw it" if held else ""
            return f"{how} while drawing the figure: all {self.images} images are done, no figure was written{kept}"
        if held:
            return f"{how}: {csv} holds every finished image: add --resume to finish"
        unchanged = f" ({csv} is unchanged)" if self.log is not None and self.log.resumed else ""
        return f"{how} before the first image: nothing was written{unchanged}"


def _find(images: list[str], output: Path, csv_path: Optional[Path]) -> list[Path]:
    """The candidate image files (exit 2 when an argument names nothing); what is not a regular file is
    skipped with a warning, this run's outputs are left out (or refused: see exclude_outputs)."""
    from dropblock.sweep import find_images

    found = find_images(images)
    if found.missing:
        fail(f"no such file or folder, or no match: {', '.join(repr(m) for m in found.missing)}", 2)
    for _, reason in found.skipped:
        warn(f"skipped: {reason}")
    return exclude_outputs(found.paths, output, csv_path)


class _Bar(ProgressBar):
    """The progress bar on stderr (a terminal only): masks done, images done, time left; warnings go
    above it."""

    def __init__(self, images: int, per_image: float) -> None:
        self.images, self.per_image, self.this_image, self.done = images, per_image, 0, 0
        self.console, self.progress = stderr_console(), None
        if stderr_is_terminal() and images * per_image > 0:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("images {task.fields[done]}/{task.fields[images]}"),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.task = self.progress.add_task("sweep", total=images * per_image, done=0, images=images)

    def advance(self, n: float) -> None:
        """``n`` more units done (masks weighted by their cost: see :func:`_costs`)."""
        self.this_image += n
        super().advance(n)

    def image_done(self, name: str) -> None:
        """One more image finished (or skipped): settle its share of the bar (what a group of images did is
        shared out among them in turn)."""
        self.advance(max(self.per_image - self.this_image, 0))
        self.this_image, self.done = max(self.this_image - self.per_image, 0), self.done + 1
        if self.progress is not None:
            self.progress.update(self.task, done=self.done, description=name[-40:])

    def warn(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(
            f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def _skip(path: Path, reason: str, state: Progress, bar: _Bar) -> list:
    bar.warn(f"skipped: {reason}")
    state.skipped.append({"path": str(path), "reason": reason})
    return []


def _group_rows(items: list, todos: list[dict], full: dict, plan: dict, bar: _Bar) -> list[list]:
    """The rows of each loaded image's (:class:`~dropblock.loader.ImageItem`) unfinished settings, ``todos``
    ({layer: settings} each). Several images run every setting, ``full``, together (the passes of a run never
    stopped, so the same rows to the last bit) and keep what was still to do."""
    from dropblock.labels import label_for
    from dropblock.sweep_engine import ImageInput, sweep_group

    images = [ImageInput(item.pixels, item.content, str(item.path), label_for(item.path, plan["labels"]))
              for item in items]
    rows = sweep_group(plan["net"], images, todos[0] if len(items) == 1 else full, masks=plan["masks"],
                       seed=plan["seed"], gamma=plan["gamma"], device=plan["device"], progress=bar.advance,
                       cost=plan["cost"])
    if len(items) == 1:
        return rows
    wanted = [{(layer, s) for layer, settings in todo.items() for s in settings} for todo in todos]
    return [[r for r in image_rows_ if (r.layer, r.setting) in want] for image_rows_, want in zip(rows, wanted)]


def _run(paths: list[Path], plan: dict, log, stage: Stage) -> Progress:
    """Every image's unfinished settings, rows written to ``log`` image by image; Ctrl-C stops cleanly, and a
    CSV that cannot be written stops the run with one line (it keeps every image finished before)."""
    from dropblock.models import LayerError, ModelLoadError

    state = Progress()
    names = {str(p) for p in paths}
    done = log.done() if log is not None else set()
    wanted, layers = set(plan["settings"]), plan["layer_names"]
    per_image = sum(plan["cost"](layer, s) for layer in layers for s in plan["settings"]) * plan["masks"]
    state.rows = [r for r in (log.previous if log is not None else [])
                  if r.image in names and r.setting in wanted and r.layer in layers]
    try:
        with _Bar(len(paths), per_image) as bar:
            full = {layer: list(plan["settings"]) for layer in layers}
            work = lambda items, todos: _group_rows(items, todos, full, plan, bar)  # noqa: E731
            for path, rows, skipped in image_rows(paths, lambda path: _todo(path, plan, done), work, full=full,
                                                  workers=plan["workers"],
                                                  short_side=plan["net"].preprocessing.short_side,
                                                  group=plan["images_per_pass"]):
                if skipped is not None:
                    _skip(path, skipped, state, bar)
                if rows and log is not None:
                    _write_rows(log, rows, state)
                state.rows.extend(rows)
                state.images_done += 1
                bar.image_done(str(path))
    except KeyboardInterrupt:
        state.interrupted = True
    except (LayerError, ModelLoadError) as e:  # the layer is not one 4-D map, or the model fails
        fail_for(e)
    stage.drawing = not state.interrupted
    return state


def _todo(path: Path, plan: dict, done: set) -> dict:
    """{layer: settings} still to do for ``path`` (only layers with something left)."""
    todo = {layer: [s for s in plan["settings"] if (str(path), layer, s) not in done] for layer in plan["layer_names"]}
    return {layer: settings for layer, settings in todo.items() if settings}


def _write_rows(log, rows: list, state: Progress) -> None:
    """Append one image's rows; exit 1 with one line when the CSV cannot take them (a full disk): the file
    is cut back to the images finished before."""
    try:
        log.write(rows)
    except OSError as e:
        from dropblock.errors import one_line

        images = len({r.image for r in state.rows})
        fail(f"cannot write {str(log.path)!r}: {one_line(e)}; it holds the {images} image{'s' * (images != 1)} "
             "finished before: make room, then add --resume", 1)


def _baseline(text: Optional[str], settings: list) -> tuple:
    """--baseline as a (method, block size) series of this run (None: dropout, or the run's first series
    without it); exit 2 otherwise."""
    from dropblock.sweep import parse_series, series_name

    series = list(dict.fromkeys(s.series for s in settings))
    if text is None:
        return ("dropout", None) if ("dropout", None) in series else series[0]
    try:
        base = parse_series(text)
    except ValueError as e:
        fail(f"--baseline: {e}", 2)
    if base not in series:
        fail(f"--baseline {text!r} is not a series of this run; choose one of {', '.join(map(series_name, series))}", 2)
    return base


def _costs(net, picked: list):
    """cost(layer, setting): a mask's share of a full forward pass (the progress bar's units), so that the
    time estimate counts input series (a whole pass per mask) and deep layers (a short rest of the network)."""
    from dropblock.sweep_engine import mask_cost
    from dropblock.sweep_layers import suffix_share

    share = {p.name: suffix_share(net, p.path) for p in picked}
    return lambda layer, setting: mask_cost(setting, share[layer])


def _per_pass(asked: Optional[int], settings: list, masks: int, device: str) -> int:
    """--images-per-pass (exit 2 when its passes would be over MAX_PASS_ROWS), or its default:
    :func:`~dropblock.sweep_engine.images_per_pass` on a GPU, 1 on the CPU."""
    from dropblock.limits import MAX_PASS_ROWS
    from dropblock.sweep_engine import images_per_pass, rows_per_image

    if asked is not None:
        rows = rows_per_image(settings, masks)
        check_at_most(asked * rows, MAX_PASS_ROWS, f"--images-per-pass {asked} x {rows} rows an image (its unedited "
                      "row and edits at a layer) =", "rows a pass")
        return asked
    return 1 if str(device).split(":")[0] == "cpu" else images_per_pass(settings, masks)


def _default_output(layers: list[str]) -> Path:
    """./sweep-LAYER.png for one layer named, ./sweep-depth.png for several (or a glob)."""
    one = len(layers) == 1 and not any(c in layers[0] for c in "*?[")
    return Path.cwd() / (f"sweep-{layers[0].strip()}.png" if one else "sweep-depth.png")
