"""The model options (``--model``, ``--weights``, ``--download``, ``--input-size``, ``--mean``, ``--std``,
``--class-names``): checked once, then the model loaded, every failure one line.

Usage errors exit 2: a spec that names no model (:class:`~dropblock.models.ModelSpecError`, unknown
names with close matches), a missing file, a bad number. Failures exit 1: weights that cannot be had,
read or fitted (:class:`~dropblock.models.WeightsError`), a model that cannot be built or run, or an
extra that is not installed (:class:`~dropblock.models.ModelLoadError`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Optional

from dropblock.cli.options import check_at_most, fail
from dropblock.errors import DropblockError
from dropblock.limits import MAX_INPUT_SIZE
from dropblock.models.names import DEFAULT_MODEL


@dataclass(frozen=True)
class ModelChoice:
    """The model a command was asked to run, as checked by :func:`model_choice`; mean and std in 0..1
    pixel units."""

    spec: str = DEFAULT_MODEL
    weights: Optional[Path] = None
    download: bool = False
    input_size: Optional[int] = None
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    class_names: Optional[Path] = None


def parse_rgb(text: Optional[str], option: str, positive: bool) -> Optional[tuple[float, float, float]]:
    """'0.485,0.456,0.406' -> three finite floats (> 0 with ``positive``); None stays None; exit 2 otherwise."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or (positive and min(values) <= 0):
        need = "three numbers > 0" if positive else "three numbers"
        fail(f"{option} must be {need} R,G,B in 0..1 pixel units, e.g. 0.485,0.456,0.406; got {text!r}", 2)
    return values  # type: ignore[return-value]


def _check_file(path: Optional[Path], option: str) -> None:
    if path is not None and not path.expanduser().is_file():
        what = "is a directory" if path.expanduser().is_dir() else "no such file"
        fail(f"{option} {str(path)!r}: {what}", 2)


def model_choice(spec: str, weights: Optional[Path] = None, download: bool = False, input_size: Optional[int] = None,
                 mean: Optional[str] = None, std: Optional[str] = None, class_names: Optional[Path] = None, *,
                 used: bool = True) -> ModelChoice:
    """The model options checked (spec form, files present, numbers valid) without importing torch.

    ``used`` False: the command will not run a model (show or compare without ``--layer``), so any model
    option given is a usage error rather than silently ignored. Exit 2 on any problem.
    """
    given = [name for name, value in (("--weights", weights), ("--download", download or None),
                                      ("--input-size", input_size), ("--mean", mean), ("--std", std),
                                      ("--class-names", class_names)) if value is not None]
    if spec != DEFAULT_MODEL:
        given.insert(0, "--model")
    if not used:
        if given:
            fail(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --layer: the model runs only on a "
                 f"layer's feature maps", 2)
        return ModelChoice()
    from dropblock.models import ModelSpecError, parse_spec

    try:
        spec = str(parse_spec(spec))
    except ModelSpecError as e:  # UnknownModelError too
        fail(str(e), 2)
    _check_file(weights, "--weights")
    _check_file(class_names, "--class-names")
    if input_size is not None and input_size < 1:
        fail(f"--input-size must be >= 1 pixel, got {input_size}", 2)
    check_at_most(input_size, MAX_INPUT_SIZE, "--input-size", "pixels")
    return ModelChoice(spec, weights, download, input_size, parse_rgb(mean, "--mean", False),
                       parse_rgb(std, "--std", True), class_names)


def fail_for(error: Exception) -> NoReturn:
    """Exit with ``error``'s one-line message: 2 for a usage error (:class:`~dropblock.errors.UsageError`), else 1."""
    from dropblock.cli.app import exit_code

    fail(str(error), exit_code(error))


def load_or_fail(choice: ModelChoice, device: str = "cpu"):
    """The model of ``choice`` with its weights, as a :class:`~dropblock.models.LoadedModel` on ``device``."""
    from dropblock.models import load_classifier

    try:
        return load_classifier(choice.spec, weights=choice.weights, download=choice.download, device=device,
                               input_size=choice.input_size, mean=choice.mean, std=choice.std,
                               class_names=choice.class_names)
    except DropblockError as e:
        fail_for(e)


def structure_or_fail(choice: ModelChoice):
    """The model of ``choice`` with random weights and its layer table filled (``.layers``)."""
    from dropblock.models import load_structure

    try:
        return load_structure(choice.spec, input_size=choice.input_size, class_names=choice.class_names)
    except DropblockError as e:
        fail_for(e)


def load_network(choice: ModelChoice, layer: str, device: str):
    """(model spec, layer name, LoadedModel, torch device) for ``--layer`` runs; exit 2 for unknown names or
    files, 1 for failures."""
    from dropblock.cli.options import resolve_device

    device = resolve_device(device)
    net = load_or_fail(choice, device)
    if not net.class_names:
        fail(f"{net.spec} has no classifier outputs (a headless model): --layer runs compare its class "
             f"predictions; pick a model with a classifier head (`dropblock layers` lists any model's layers)", 2)
    return net.spec, resolve_layer_or_fail(net, layer), net, device


def resolve_layer_or_fail(model, layer: str) -> str:
    """``layer``'s name in ``model`` (a built-in's short name as given); exit 2 with close matches when no
    module has it."""
    from dropblock.models import UnknownNameError

    try:
        return model.resolve_layer(layer)
    except UnknownNameError as e:
        fail_for(e)
