"""``dropblock sweep``: the paper's Figure 5 on your own images. Regularizers applied at inference to one
layer, swept over keep_prob, block size and method across images; a figure, a table or JSON, and an
optional CSV of per-image rows that a stopped run can resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer

from dropblock.cli.models import fail_for, load_network, model_choice
from dropblock.cli.options import (
    GAMMA_HELP, ClassNamesOpt, DownloadOpt, InputSizeOpt, JsonOpt, MeanOpt, ModelOpt, ProgressBar, StdOpt, WeightsOpt,
    check_gamma_mode, check_output_path, check_positive, fail, save_or_fail,
)
from dropblock.cli.report import columns, note, pct, print_json, stderr_console, stdout_console

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


def _check_files(csv_path: Optional[Path], resume: bool, labels: Optional[Path], output: Path) -> None:
    if resume and csv_path is None:
        fail("--resume needs --csv FILE: the CSV a previous run wrote", 2)
    if csv_path is not None:
        if csv_path.is_dir():
            fail(f"--csv {str(csv_path)!r} is a directory; give a file name", 2)
        if csv_path.exists() and not resume:
            fail(f"--csv {str(csv_path)!r} exists; pass --resume to continue it, or choose another file", 2)
        if not csv_path.resolve().parent.is_dir():
            fail(f"--csv {str(csv_path)!r}: directory {str(csv_path.parent)!r} does not exist", 2)
    if labels is not None and not labels.is_file():
        fail(f"--labels {str(labels)!r}: no such file", 2)
    check_output_path(output, "--output", (csv_path,) if csv_path else ())


def _open_csv(csv_path: Optional[Path], resume: bool, masks: int):
    """The run's SweepCsv (None without --csv); exit 2 for a CSV that cannot be resumed."""
    if csv_path is None:
        return None
    from dropblock.sweep_csv import SweepCsv, SweepCsvError

    try:
        log = SweepCsv(csv_path, resume=resume)
    except (SweepCsvError, OSError) as e:
        fail(f"--resume: {e}", 2)
    if resume and not log.resume:
        note(f"{str(csv_path)!r} does not exist yet: starting it")
    other = sorted({row.masks for row in log.previous} - {masks})
    if other:
        fail(f"--resume: {str(csv_path)!r} holds rows of -n {other[0]}; resume with the same -n, or start "
             "another --csv", 2)
    return log


def _read_labels(labels: Optional[Path], class_names):
    if labels is None:
        return None
    from dropblock.labels import LabelError, read_labels

    try:
        return read_labels(labels, list(class_names))
    except LabelError as e:
        fail(f"--labels: {e}", 2)


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
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
) -> None:
    """Regularizers at inference on one layer, across images: agreement, KL, accuracy and drop rate
    against keep_prob (the paper's Figure 5)."""
    from dropblock.sweep import settings_grid

    settings = settings_grid(_methods(methods), _ints(block_sizes, "--block-sizes"), _floats(keep_probs, "--keep-probs"))
    check_positive(masks, "--masks")
    check_positive(seed, "--seed", 0)
    check_positive(dpi, "--dpi", 10)
    check_gamma_mode(gamma_mode)
    choice = model_choice(model, weights, download, input_size, mean, std, class_names)
    output = output or Path.cwd() / f"sweep-{layer}.png"
    _check_files(csv_path, resume, labels, output)
    from dropblock.sweep import find_images

    found = find_images(images)
    if found.missing:
        fail(f"no such file or folder, or no match: {', '.join(repr(m) for m in found.missing)}", 2)
    model_name, layer_name, net, dev = load_network(choice, layer, device)
    plan = dict(model=model_name, layer=layer_name, net=net, device=dev, settings=settings, masks=masks,
                seed=seed, gamma=gamma_mode, labels=_read_labels(labels, net.class_names))
    log = _open_csv(csv_path, resume, masks)
    state = _run(found.paths, plan, log)
    _finish(state, plan, found.paths, output, dpi or 150, as_json, csv_path)


class _Bar(ProgressBar):
    """The progress bar on stderr (a terminal only): masks done, images done, time left; warnings go
    above it."""

    def __init__(self, images: int, per_image: int) -> None:
        self.images, self.per_image, self.this_image, self.done = images, per_image, 0, 0
        self.console, self.progress = stderr_console(), None
        if self.console.is_terminal and images * per_image > 0:
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


def _one_image(path: Path, todo: list, plan: dict, state: Progress, bar: _Bar) -> list:
    """The rows of one image's unfinished settings; [] (and a warning) when it cannot be read."""
    from dropblock.images import ImageLoadError, load_image
    from dropblock.labels import label_for
    from dropblock.sweep import content_id, sweep_image

    try:
        content = content_id(path)
        loaded = load_image(path)
    except (ImageLoadError, OSError) as e:
        from dropblock.errors import one_line

        reason = one_line(e)
        bar.warn(f"skipped: {reason}")
        state.skipped.append({"path": str(path), "reason": reason})
        return []
    return sweep_image(plan["net"], loaded.pixels, plan["layer"], todo, masks=plan["masks"],
                       seed=plan["seed"], content=content, name=str(path), gamma=plan["gamma"],
                       label=label_for(path, plan["labels"]), device=plan["device"], progress=bar.advance)


def _run(paths: list[Path], plan: dict, log) -> Progress:
    """Every image's unfinished settings, rows written to ``log`` image by image; Ctrl-C stops cleanly."""
    from dropblock.models import LayerError, ModelLoadError

    state = Progress()
    names = {str(p) for p in paths}
    done = log.done() if log is not None else set()
    wanted = set(plan["settings"])
    state.rows = [r for r in (log.previous if log is not None else []) if r.image in names and r.setting in wanted]
    try:
        with _Bar(len(paths), len(plan["settings"]) * plan["masks"]) as bar:
            for path in paths:
                todo = [s for s in plan["settings"] if (str(path), s) not in done]
                rows = _one_image(path, todo, plan, state, bar) if todo else []
                if rows and log is not None:
                    log.write(rows)
                state.rows.extend(rows)
                state.images_done += 1
                bar.image_done(str(path))
    except KeyboardInterrupt:
        state.interrupted = True
    except (LayerError, ModelLoadError) as e:  # the layer is not one 4-D map, or the model fails
        fail_for(e)
    except OSError as e:
        fail(f"cannot write {str(log.path)!r}: {e}", 1)
    finally:
        if log is not None:
            log.close()
    return state


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
    """The figure (unless interrupted), the table or JSON; exit 130 after Ctrl-C, 1 with no image read."""
    from dropblock.sweep import point_json, summarize

    points = summarize(state.rows, plan["settings"])
    images = len({r.image for r in state.rows})
    if not points and not state.interrupted:
        fail(f"no readable image among the {len(paths)} file{'s' * (len(paths) != 1)} given", 1)
    written = None
    if points and not state.interrupted:
        from dropblock.viz.sweep import sweep_figure

        save_or_fail(sweep_figure(points, model=plan["model"], layer=plan["layer"], images=images,
                                  masks=plan["masks"]), output, dpi)
        written = output
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
    if state.interrupted:
        tail = f"; {str(csv_path)!r} holds every finished image: add --resume to finish" if csv_path else ""
        note(f"interrupted after {state.images_done} of {len(paths)} images{tail}")
        raise typer.Exit(130)
