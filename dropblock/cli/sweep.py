"""``dropblock sweep``: the paper's Figure 5 on your own images. Regularizers applied at inference to one
layer, swept over keep_prob, block size and method across images; a figure, a table or JSON, and an
optional CSV of per-image rows that a stopped run can resume."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

from dropblock.cli.models import fail_for, load_network, model_choice
from dropblock.cli.options import (
    GAMMA_HELP, ClassNamesOpt, DownloadOpt, InputSizeOpt, JsonOpt, MeanOpt, ModelOpt, ProgressBar, StdOpt, WeightsOpt,
    check_dpi, check_gamma_mode, check_positive, fail, save_or_say, stderr_is_terminal,
)
from dropblock.cli.ranks import image_rows, ranked
from dropblock.cli.report import columns, note, pct, print_json, stderr_console, stdout_console
from dropblock.cli.sweep_files import check_files, exclude_outputs, open_csv, run_settings

IMAGES_HELP = "Image files, folders (searched recursively) or globs such as 'photos/*.jpg'."
CSV_HELP = ("Write one row per image, method, block size and keep_prob to this CSV as each image finishes "
            "(it must not exist, unless --resume).")


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
    layer: str = typer.Option(..., "--layer", "-l", help="The layer whose output is masked (see `dropblock layers`).",
                              show_default=False),
    model: ModelOpt = "efficientnet-lite0",
    weights: WeightsOpt = None,
    download: DownloadOpt = False,
    input_size: InputSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    class_names: ClassNamesOpt = None,
    keep_probs: str = typer.Option("1,0.95,0.9,0.85,0.8,0.75,0.7", "--keep-probs", help="keep_prob values, comma-separated."),
    block_sizes: str = typer.Option("1,3,5,7", "--block-sizes", help="DropBlock block sizes in feature-map cells."),
    methods: str = typer.Option("dropblock,dropout,spatial-dropout,cutout", "--methods",
                                help="Regularizers, comma-separated (Cutout's side follows the drop rate)."),
    masks: int = typer.Option(16, "--masks", "-n", help="Masks per image and setting."),
    gamma_mode: str = typer.Option("paper", "--gamma", help=GAMMA_HELP),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with the columns image,label (class index or "
                                          "name) for accuracy; folders named by ImageNet WordNet id work without it."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help=CSV_HELP),
    resume: bool = typer.Option(False, "--resume", help="Skip what the --csv file holds and append the rest."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Figure file (.png, .svg, .pdf) "
                                          "\\[default: ./sweep-LAYER.png].", show_default=False),
    dpi: Optional[int] = typer.Option(None, "--dpi", help="Resolution of a raster figure \\[default: 150].",
                                      show_default=False),
    as_json: JsonOpt = False,
    seed: int = typer.Option(0, "--seed", help="Random seed: an image's masks come from it, the image's bytes and "
                                                "the setting, so they never depend on the other images."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
    workers: int = typer.Option(0, "--workers", help="Processes that decode images ahead (0: none)."),
) -> None:
    """Regularizers at inference on one layer, across images: agreement, KL, accuracy and drop rate
    against keep_prob (the paper's Figure 5)."""
    from dropblock.sweep import settings_grid

    lists = (_methods(methods), _ints(block_sizes, "--block-sizes"), _floats(keep_probs, "--keep-probs"))
    settings = settings_grid(*lists)
    check_positive(masks, "--masks")
    check_positive(seed, "--seed", 0)
    check_positive(workers, "--workers", 0)
    check_dpi(dpi)
    check_gamma_mode(gamma_mode)
    choice = model_choice(model, weights, download, input_size, mean, std, class_names)
    output = output or Path.cwd() / f"sweep-{layer}.png"
    check_files(csv_path, resume, output, {"--labels": labels, "--weights": weights, "--class-names": class_names})
    stage = Stage(csv_path)
    try:
        paths = _find(images, output, csv_path)
        stage.images = len(paths)
        model_name, layer_name, net, dev = load_network(choice, layer, device)
        plan = dict(model=model_name, layer=layer_name, net=net, device=dev, settings=settings, masks=masks,
                    seed=seed, gamma=gamma_mode, labels=_read_labels(labels, net.class_names, paths), workers=workers)
        log = open_csv(csv_path, resume, run_settings(plan, *lists))
        with log if log is not None else nullcontext():
            stage.log = log
            state = _run(paths, plan, log, stage)
            _finish(state, plan, paths, output, dpi or 150, as_json, csv_path)
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
        if self.drawing:
            kept = f"; {csv} holds every image: rerun with --resume to draw it" if held else ""
            return f"interrupted while drawing the figure: all {self.images} images are done, no figure was written{kept}"
        if held:
            return f"interrupted: {csv} holds every finished image: add --resume to finish"
        unchanged = f" ({csv} is unchanged)" if self.log is not None and self.log.resumed else ""
        return f"interrupted before the first image: nothing was written{unchanged}"


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

    def __init__(self, images: int, per_image: int) -> None:
        self.images, self.per_image, self.this_image, self.done = images, per_image, 0, 0
        self.console, self.progress = stderr_console(), None
        if stderr_is_terminal() and images * per_image > 0:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("images {task.fields[done]}/{task.fields[images]}"),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.task = self.progress.add_task("sweep", total=images * per_image, done=0, images=images)

    def advance(self, n: int) -> None:
        """``n`` more masks done."""
        self.this_image += n
        super().advance(n)

    def image_done(self, name: str) -> None:
        """One more image finished (or skipped): settle its share of the bar."""
        self.advance(max(self.per_image - self.this_image, 0))
        self.this_image, self.done = 0, self.done + 1
        if self.progress is not None:
            self.progress.update(self.task, done=self.done, description=name[-40:])

    def warn(self, text: str) -> None:
        (self.progress.console if self.progress is not None else self.console).print(
            f"[yellow]warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def _skip(path: Path, reason: str, state: Progress, bar: _Bar) -> list:
    bar.warn(f"skipped: {reason}")
    state.skipped.append({"path": str(path), "reason": reason})
    return []


def _one_image(item, todo: list, plan: dict, bar: _Bar) -> list:
    """The rows of one loaded image's (:class:`~dropblock.loader.ImageItem`) unfinished settings."""
    from dropblock.labels import label_for
    from dropblock.sweep import sweep_image

    return sweep_image(plan["net"], item.pixels, plan["layer"], todo, masks=plan["masks"],
                       seed=plan["seed"], content=item.content, name=str(item.path), gamma=plan["gamma"],
                       label=label_for(item.path, plan["labels"]), device=plan["device"], progress=bar.advance)


def _run(paths: list[Path], plan: dict, log, stage: Stage) -> Progress:
    """Every image's unfinished settings, rows written to ``log`` image by image; Ctrl-C stops cleanly, and a
    CSV that cannot be written stops the run with one line (it keeps every image finished before)."""
    from dropblock.models import LayerError, ModelLoadError

    state = Progress()
    names = {str(p) for p in paths}
    done = log.done() if log is not None else set()
    wanted = set(plan["settings"])
    state.rows = [r for r in (log.previous if log is not None else []) if r.image in names and r.setting in wanted]
    try:
        with _Bar(len(paths), len(plan["settings"]) * plan["masks"]) as bar:
            todo = lambda path: [s for s in plan["settings"] if (str(path), s) not in done]  # noqa: E731
            work = lambda item, todo: _one_image(item, todo, plan, bar)  # noqa: E731
            for path, rows, skipped in image_rows(paths, todo, work, full=plan["settings"], workers=plan["workers"],
                                                  short_side=plan["net"].preprocessing.short_side):
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


def _stat(m, percent: bool) -> str:
    from dropblock.sweep import se_or_none

    se = se_or_none(m)
    if percent:
        return f"{100 * m.mean:.1f}%" + ("" if se is None else f" ± {100 * se:.1f}%")
    return f"{m.mean:.4g}" + ("" if se is None else f" ± {se:.2g}")


def _table(points, plan: dict, images: int):
    from dropblock.viz.labels import METHOD_LABELS

    accuracy = any(p.accuracy is not None for p in points)
    headers = ["method", "block", "keep_prob", "images", "drop rate", "agreement", "KL (nats)"]
    rows = []
    for p in points:
        s = p.setting
        rows.append([METHOD_LABELS[s.method], "—" if s.block_size is None else str(s.block_size), f"{s.keep_prob:g}",
                     str(p.images), pct(p.drop_rate.mean, 1), _stat(p.agreement, True), _stat(p.kl, False)]
                    + ([("—" if p.accuracy is None else _stat(p.accuracy, True))] if accuracy else []))
    band = "± standard error across images" if images > 1 else "one image: no standard error"
    title = (f"{plan['model']} {plan['layer']}: {images} image{'s' * (images != 1)}, {plan['masks']} masks each, "
             f"gamma {plan['gamma']} ({band})")
    return columns(title, headers + (["accuracy"] if accuracy else []), rows, right_from=1)


def _finish(state: Progress, plan: dict, paths: list[Path], output: Path, dpi: int, as_json: bool,
            csv_path: Optional[Path]) -> None:
    """The figure (unless interrupted), the table or JSON; exit 130 after Ctrl-C, 1 with no image read, and 1
    (after the table or JSON, with the CSV kept) when the figure cannot be written."""
    from dropblock.sweep import point_json, summarize

    points = summarize(state.rows, plan["settings"])
    images = len({r.image for r in state.rows})
    if not points and not state.interrupted:
        fail(f"no readable image among the {len(paths)} file{'s' * (len(paths) != 1)} given", 1)
    problem = None
    if points and not state.interrupted:
        from dropblock.viz.sweep import sweep_figure

        problem = save_or_say(sweep_figure(points, model=plan["model"], layer=plan["layer"], images=images,
                                           masks=plan["masks"]), output, dpi)
    written = output if points and not state.interrupted and problem is None else None
    if as_json:
        print_json({"model": plan["model"], "layer": plan["layer"], "images": images, "skipped": state.skipped,
                    "results": [point_json(p) for p in points], "output": None if written is None else str(written),
                    "csv": None if csv_path is None else str(csv_path), "masks": plan["masks"],
                    "gamma": plan["gamma"], "seed": plan["seed"], "interrupted": state.interrupted})
    elif points:
        console = stdout_console()
        console.print(_table(points, plan, images))
        if written is not None:
            console.print(f"figure written to {written}")
    if problem is not None:
        kept = f"; {str(csv_path)!r} holds every image" if csv_path else ""
        fail(f"{problem} (the results above are complete{kept})", 1)
    if state.interrupted:
        tail = f"; {str(csv_path)!r} holds every finished image: add --resume to finish" if csv_path else ""
        note(f"interrupted after {state.images_done} of {len(paths)} images{tail}")
        raise typer.Exit(130)
