"""What ``dropblock sweep`` shows when the images are done: the figure (one layer: each metric against
keep_prob; several: by depth), the table of means and the table of paired differences, or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dropblock.cli.app import stopped_word
from dropblock.cli.options import fail, save_or_say
from dropblock.cli.report import columns, note, pct, print_json, stdout_console


def stat_text(m, percent: bool) -> str:
    """A MeanSE across images as '81.2% ± 3.1%' or '0.0123 ± 0.004' (no ± from one image)."""
    from dropblock.sweep import se_or_none

    se = se_or_none(m)
    if percent:
        return f"{100 * m.mean:.1f}%" + ("" if se is None else f" ± {100 * se:.1f}%")
    return f"{m.mean:.4g}" + ("" if se is None else f" ± {se:.2g}")


def series_text(method: str, block: Optional[int]) -> str:
    """'DropBlock, block 7', 'Dropout'."""
    from dropblock.viz.labels import METHOD_LABELS

    label = METHOD_LABELS.get(method, method)
    return label if block is None else f"{label}, block {block}"


def _title(plan: dict, images: int, what: str) -> str:
    band = "± standard error across images" if images > 1 else "one image: no standard error"
    layers = plan["layer_names"]
    where = layers[0] if len(layers) == 1 else f"{len(layers)} layers"
    return (f"{plan['model']} {where}: {what}, {images} image{'s' * (images != 1)}, {plan['masks']} masks each, "
            f"gamma {plan['gamma']} ({band})")


def points_table(points, plan: dict, images: int):
    """One row per (layer, setting): images, drop rate, agreement, KL, accuracy (with labels)."""
    accuracy = any(p.accuracy is not None for p in points)
    several = len(plan["layer_names"]) > 1
    headers = (["layer"] * several + ["series", "keep_prob", "images", "drop rate", "agreement", "KL (nats)"]
               + ["accuracy"] * accuracy)
    rows = []
    for p in points:
        s = p.setting
        rows.append([p.layer] * several + [series_text(s.method, s.block_size), f"{s.keep_prob:g}", str(p.images),
                     pct(p.drop_rate.mean, 1), stat_text(p.agreement, True), stat_text(p.kl, False)]
                    + [("—" if p.accuracy is None else stat_text(p.accuracy, True))] * accuracy)
    return columns(_title(plan, images, "means"), headers, rows, right_from=1 + several)


def diff_text(d, percent: bool) -> str:
    """'+0.174 ± 0.056 (5/5)': the mean difference, its SE, and the images where it is positive of all."""
    scale, unit = (100.0, " pp") if percent else (1.0, "")
    se = "" if d.se is None else f" ± {scale * d.se:.2g}"
    return f"{scale * d.mean:+.3g}{se}{unit} ({d.positive}/{d.images})"


def paired_table(paired, plan: dict, images: int):
    """One row per (series, baseline, layer, keep_prob): the paired difference in KL, agreement and
    accuracy (in percentage points) and how many images have it positive."""
    several = len(plan["layer_names"]) > 1
    groups: dict[tuple, dict] = {}
    for d in paired:
        groups.setdefault((d.series, d.baseline, d.layer, d.keep_prob), {})[d.metric] = d
    accuracy = any(d.metric == "accuracy" for d in paired)
    headers = (["series", "minus"] + ["layer"] * several + ["keep_prob", "ΔKL (nats)", "Δagreement"]
               + ["Δaccuracy"] * accuracy)
    rows = []
    for (series, base, layer, kp), by in groups.items():
        cells = [diff_text(by[m], m != "kl") if m in by else "—" for m in ("kl", "agreement", "accuracy")]
        rows.append([series_text(*series), series_text(*base)] + [layer] * several + [f"{kp:g}"]
                    + cells[:2 + accuracy])
    what = "paired differences, series minus the other; (k/n): images where it is positive"
    return columns(_title(plan, images, what), headers, rows, right_from=2 + several)


def _figure(points, paired, plan: dict, images: int):
    if len(plan["layer_names"]) > 1:
        from dropblock.viz.depth import depth_figure

        return depth_figure(points, paired, layers=plan["layer_index"], baseline=plan["baseline"],
                            model=plan["model"], images=images, masks=plan["masks"])
    from dropblock.viz.sweep import sweep_figure

    return sweep_figure(points, model=plan["model"], layer=plan["layer_names"][0], images=images, masks=plan["masks"],
                        paired=paired, baseline=plan["baseline"])


def finish(state, plan: dict, paths: list[Path], output: Path, dpi: int, as_json: bool,
           csv_path: Optional[Path]) -> None:
    """The figure (unless interrupted), the tables or JSON; exit 130 after Ctrl-C (143 after SIGTERM: see
    cli.app), 1 with no image read, and 1 (after the tables or JSON, with the CSV kept) when the figure
    cannot be written."""
    from dropblock.paired import paired_differences, paired_json
    from dropblock.sweep import point_json, series_name, summarize

    points = summarize(state.rows, plan["settings"], plan["layer_names"])
    paired = paired_differences(state.rows, plan["baseline"], plan["layer_names"])
    images = len({r.image for r in state.rows})
    if not points and not state.interrupted:
        fail(f"no readable image among the {len(paths)} file{'s' * (len(paths) != 1)} given", 1)
    problem = None
    if points and not state.interrupted:
        problem = save_or_say(_figure(points, paired, plan, images), output, dpi)
    written = output if points and not state.interrupted and problem is None else None
    if as_json:
        print_json({"model": plan["model"], "layers": plan["layer_names"], "images": images, "skipped": state.skipped,
                    "results": [point_json(p) for p in points], "baseline": series_name(plan["baseline"]),
                    "paired": [paired_json(d) for d in paired], "output": None if written is None else str(written),
                    "csv": None if csv_path is None else str(csv_path), "masks": plan["masks"],
                    "gamma": plan["gamma"], "seed": plan["seed"], "images_per_pass": plan["images_per_pass"],
                    "interrupted": state.interrupted})
    elif points:
        console = stdout_console()
        console.print(points_table(points, plan, images))
        if paired:
            console.print(paired_table(paired, plan, images))
        if written is not None:
            console.print(f"figure written to {written}")
    if problem is not None:
        kept = f"; {str(csv_path)!r} holds every image" if csv_path else ""
        fail(f"{problem} (the results above are complete{kept})", 1)
    if state.interrupted:
        tail = f"; {str(csv_path)!r} holds every finished image: add --resume to finish" if csv_path else ""
        note(f"{stopped_word()} after {state.images_done} of {len(paths)} images{tail}")
        raise typer.Exit(130)
