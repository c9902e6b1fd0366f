"""``dropblock layers`` and the ``--layer`` runs of show and compare: a regularizer on one layer's feature
maps of a CNN (any model spec, see :mod:`dropblock.cli.models`), with its effect on the prediction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from dropblock.cli.models import (
    ModelChoice, fail_for, load_network, load_or_fail, model_choice, structure_or_fail,
)
from dropblock.cli.options import (
    ClassNamesOpt, DownloadOpt, InputSizeOpt, MeanOpt, ModelOpt, ProgressBar, StdOpt, WeightsOpt, fail,
    load_image_or_fail, note_if_clipped, save_or_fail,
)
from dropblock.cli.report import columns, key_value, mean_se, pct, print_json, stdout_console
from dropblock.models.names import DEFAULT_MODEL

FILTER_HELP = ("Only the layers whose name matches this glob (* matches dots too), e.g. 'layer3.*.conv2'; repeat it "
               "or separate globs with commas. On a built-in model it searches every module, not only the short names.")


def _plain(option: type) -> type:
    """A model option of show/compare (``With --layer: ...``) as ``layers`` takes it: same flag, no prefix."""
    info = option.__metadata__[0]
    text = info.help[len("With --layer: "):] if info.help.startswith("With --layer: ") else info.help
    return Annotated[option.__origin__, typer.Option(*info.param_decls, help=text[0].upper() + text[1:],
                                                     show_default=info.show_default)]


def layers(
    model: _plain(ModelOpt) = DEFAULT_MODEL,
    weights: _plain(WeightsOpt) = None,
    download: _plain(DownloadOpt) = False,
    input_size: _plain(InputSizeOpt) = None,
    mean: _plain(MeanOpt) = None,
    std: _plain(StdOpt) = None,
    class_names: _plain(ClassNamesOpt) = None,
    filters: Optional[list[str]] = typer.Option(None, "--filter", help=FILTER_HELP, show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {name, type, shape, dropblock_ok, calls}."),
) -> None:
    """The layers --layer can pick: type, output shape (C x H x W) from one forward pass, where DropBlock makes sense."""
    choice = model_choice(model, weights, download, input_size, mean, std, class_names)
    patterns = [p.strip() for text in filters or () for p in text.split(",") if p.strip()] or None
    structure = load_or_fail(choice) if weights or download else structure_or_fail(choice)
    table = _layer_rows(structure, patterns)
    every = _layer_rows(structure, ["*"]) if patterns else table
    if not table:
        fail(f"--filter {','.join(patterns)}: none of the {len(every)} layers of {structure.spec} matches, e.g. "
             f"{', '.join(li.name for li in every[:3])}", 2)
    if as_json:
        print_json([{"name": li.name, "type": li.type, "shape": list(li.shape), "dropblock_ok": _pickable(li),
                     "calls": li.calls} for li in table])
        return
    rows = [[li.name, li.type, " x ".join(map(str, li.shape)), _dropblock_cell(li)] for li in table]
    size = structure.input_size
    title = f"{structure.spec}: layers at a {size}x{size} input" + (f", {len(table)} of {len(every)}" if patterns else "")
    stdout_console().print(columns(title, ["layer", "type", "output (C x H x W)", "DropBlock"], rows, right_from=2))


def _layer_rows(structure, patterns: Optional[list[str]]) -> list:
    """Every 4-D layer of the model in call order; a built-in's short names (``stem``, ``blocks.5``) stand for
    their modules, and without ``patterns`` only they are listed."""
    from dataclasses import replace

    from dropblock.models import filter_layers

    aliases = getattr(structure.module, "layer_paths", {})
    by_path = {li.name: li for li in structure.layers}
    if aliases and patterns is None:
        return [replace(by_path[path], name=alias) for alias, path in aliases.items()]
    short = {path: alias for alias, path in aliases.items()}
    table = [replace(li, name=short[li.name]) if li.name in short else li for li in structure.layers]
    return filter_layers(table, patterns)


def _pickable(layer) -> bool:
    """DropBlock makes sense: a map larger than 1x1, from a module that runs once (so --layer can pick it)."""
    return layer.dropblock_ok and layer.calls == 1


def _dropblock_cell(layer) -> str:
    if layer.calls > 1:
        return f"— (runs {layer.calls}x)"
    return "✓" if layer.dropblock_ok else "—"


@dataclass(frozen=True)
class LayerRequest:
    """What ``show --layer`` (one method) or ``compare --layer`` (all methods) asked for, checked by the
    command: the image, the regularizers and their settings, the model and layer, and the output."""

    image: Path
    methods: tuple[str, ...]
    p: float
    block_size: Optional[int]
    gamma_mode: str
    seed: int
    output: Path
    dpi: int
    as_json: bool
    layer: str
    model: ModelChoice
    samples: int
    shared_channels: bool
    device: str
    cam: Optional[str] = None  # a dropblock.cam.CAM_METHODS key, with its layer and class (None: default)
    cam_layer: Optional[str] = None
    class_: Optional[str] = None


def run_on_layer(request: LayerRequest) -> None:
    """Apply each requested method to the layer's output, ``request.samples`` masks each, then draw the
    figure and print the table (or JSON)."""
    _, layer_name, net, device = load_network(request.model, request.layer, request.device)
    loaded = load_image_or_fail(request.image, short_side=net.preprocessing.short_side)
    b = request.block_size or 7
    effects = _effects(request, net, loaded.pixels, layer_name, b, device)
    _, h, w = effects[0].feature_shape
    if "dropblock" in request.methods:
        note_if_clipped(b, h, w, what=f"map of {layer_name}")
    cams = _cams(request, net, layer_name, loaded.pixels, effects) if request.cam else None
    from dropblock.viz import feature_compare_figure, feature_show_figure

    name = loaded.path.name
    one = len(effects) == 1
    figure = (feature_show_figure(effects[0], name, cam=cams and cams[0]) if one
              else feature_compare_figure(effects, name, cams=cams))
    save_or_fail(figure, request.output, request.dpi)
    if request.as_json:
        _print_layer_json(effects, request, cams)
    elif one:
        stdout_console().print(_layer_show_table(effects[0], name, request.output, cams and cams[0]))
    else:
        console = stdout_console()
        console.print(_layer_compare_table(effects, name, cams))
        console.print(f"figure written to {request.output}")


def _effects(request: LayerRequest, net, pixels, layer_name: str, block_size: int, device: str) -> list:
    """One LayerEffect per requested method; exit 2 when the layer is not one 4-D map, 1 when the model fails."""
    from dropblock.effect import layer_effect
    from dropblock.models import LayerError, ModelLoadError

    effects = []
    n = request.samples * len(request.methods)
    try:
        with ProgressBar(n, "masks through the network", show=n > 8) as bar:
            for method in request.methods:
                effects.append(layer_effect(net, pixels, layer_name, method, request.p, block_size=block_size,
                                            gamma=request.gamma_mode, shared_channels=request.shared_channels,
                                            samples=request.samples, seed=request.seed, device=device,
                                            progress=bar.advance))
    except (LayerError, ModelLoadError) as e:
        fail_for(e)
    return effects


def _cams(request: LayerRequest, net, layer_name: str, pixels, effects) -> list:
    """The CAM before and after of each effect's masks; exit 2 for a bad --class or --cam-layer."""
    from dropblock.cam import layer_cam
    from dropblock.labels import LabelError, class_index
    from dropblock.models import UnknownNameError

    try:
        index = None if request.class_ is None else class_index(request.class_, list(net.class_names))
    except LabelError as e:
        fail(f"--class: {e}", 2)
    cams = []
    with ProgressBar(len(effects), "class activation maps", show=request.cam in ("scorecam", "sscam", "iscam")) as bar:
        for effect in effects:
            try:
                cams.append(layer_cam(net, pixels, layer_name, effect.draws, method=request.cam,
                                      cam_layer=request.cam_layer, class_index=index, seed=request.seed))
            except UnknownNameError as e:
                fail(f"--cam-layer: {e}", 2)
            except ValueError as e:
                fail(f"--cam: {e}", 2)
            bar.advance(1)
    return cams


def _cam_text(cam) -> str:
    r = "—" if cam.correlation is None else f"{cam.correlation:.3f}"
    return f"r {r}; peak {list(cam.peak_before)} → {list(cam.peak_after)}"


def _print_layer_json(effects, request: LayerRequest, cams=None) -> None:
    from dropblock.cam import cam_json
    from dropblock.effect import effect_json

    rows = [dict(effect_json(effect), output=str(request.output), seed=request.seed) for effect in effects]
    for row, cam in zip(rows, cams or ()):
        row["cam"] = cam_json(cam)
    if len(rows) == 1:
        print_json(rows[0])
        return
    first = effects[0]
    print_json({"drop_rate_target": request.p, "output": str(request.output), "seed": request.seed,
                "model": first.model, "layer": first.layer, "feature_shape": list(first.feature_shape),
                "methods": rows})


def _prediction(pred) -> str:
    return f"{pred.label} ({100 * pred.prob:.1f}%)"


def _layer_show_table(effect, name: str, output: Path, cam=None):
    from dropblock.viz.labels import METHOD_LABELS, describe

    c, h, w = effect.feature_shape
    label = METHOD_LABELS[effect.method]
    stats = effect.stats
    one = f", mask 1 of {stats.samples}" if stats.samples > 1 else ""  # the figure shows mask 1
    rows = [
        ("image", name),
        ("model / layer", f"{effect.model} / {effect.layer} ({c}x{h}x{w})"),
        ("method", f"{label}: {describe(effect.method, effect.params, effect.gamma, unit='cells')}"),
        ("target drop rate", pct(effect.p)),
        ("gamma", "—" if effect.gamma is None else f"{effect.gamma:.6g}"),
        ("expected drop rate", pct(effect.expected_drop_rate)),
        (f"realized drop rate{one}", pct(effect.first.drop_rate)),
        ("top-1 before", _prediction(effect.predictions_before[0])),
        (f"top-1 after{one}", _prediction(effect.first.predictions_after[0])),
        (f"KL(before ‖ after){one}", f"{effect.first.kl:.4g} nats"),
    ]
    if stats.samples > 1:
        rows += [
            (f"over {stats.samples} masks: drop rate", mean_se(stats.drop_rate)),
            ("  KL(before ‖ after)", mean_se(stats.kl, percent=False) + " nats"),
            (f"  P({effect.predictions_before[0].label}) after", mean_se(stats.prob_of_clean_top1, 1)),
            ("  top-1 changed", mean_se(stats.top1_changed, 1)),
        ]
    if cam is not None:
        what = f"{cam.method} at {cam.layer} ({cam.class_label})"
        rows.append((what, _cam_text(cam) + (f" (mean of {cam.samples} masks)" if cam.samples > 1 else "")))
    rows.append(("output", str(output)))
    return key_value(f"dropblock show --layer: {label}", rows)


def _layer_compare_table(effects, name: str, cams=None):
    from dropblock.viz.labels import METHOD_LABELS, describe

    first = effects[0]
    c, h, w = first.feature_shape
    top = first.predictions_before[0]
    headers = ["method", "parameters", "expected", f"drop rate ({first.stats.samples} masks)", f"P({top.label}) after",
               "top-1 changed", "KL (nats)"]
    rows = [[METHOD_LABELS[e.method], describe(e.method, e.params, e.gamma, unit="cells"), pct(e.expected_drop_rate),
             mean_se(e.stats.drop_rate), mean_se(e.stats.prob_of_clean_top1, 1), mean_se(e.stats.top1_changed, 0),
             mean_se(e.stats.kl, percent=False)] for e in effects]
    if cams:
        headers.append(f"{cams[0].method} ({cams[0].class_label})")
        for row, cam in zip(rows, cams):
            row.append(_cam_text(cam))
    title = f"{name} on {first.model} {first.layer} ({c}x{h}x{w}): before, {_prediction(top)}; target drop rate {pct(first.p)}"
    return columns(title, headers, rows, right_from=2)
