"""The files of ``dropblock sweep``, checked before the run: no output is an input, every output can be
written, the CSV records the run's settings and is resumed only with the same ones. Every problem is one
line (exit 2 for what the user can fix in the command, 1 for failures)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from dropblock.cli.options import check_output_path, check_writable_or_fail, fail

OPTION_OF = {"version": "dropblock", "model": "--model", "weights_sha256": "weights (SHA-256)",
             "preprocessing": "preprocessing (--input-size, --mean, --std)", "layers": "--layer", "device": "--device",
             "seed": "--seed", "gamma": "--gamma", "methods": "--methods", "block_sizes": "--block-sizes",
             "keep_probs": "--keep-probs", "masks": "-n", "images_per_pass": "--images-per-pass",
             "labels": "--labels (SHA-256 of its image -> class rows)"}
"""The option (or what) each key of a sweep CSV's settings comes from, for messages."""


def check_files(csv_path: Optional[Path], resume: bool, output: Path, inputs: dict[str, Optional[Path]]) -> None:
    """Before anything runs: --resume needs --csv; the CSV is a new file (or, with --resume, a regular one),
    writable, and neither the figure nor one of ``inputs`` (option -> file: --labels, --weights, ...); the
    figure passes :func:`check_output_path`. Exit 2 otherwise."""
    from dropblock.files import same_file

    if resume and csv_path is None:
        fail("--resume needs --csv FILE: the CSV a previous run wrote", 2)
    named = [(option, path) for option, path in inputs.items() if path is not None]
    if csv_path is not None:
        if os.path.isdir(csv_path):
            fail(f"--csv {str(csv_path)!r} is a directory; give a file name", 2)
        if os.path.lexists(csv_path) and not resume:
            fail(f"--csv {str(csv_path)!r} exists; pass --resume to continue it, or choose another file", 2)
        if same_file(csv_path, output):
            fail(f"--csv {str(csv_path)!r} and --output {str(output)!r} are the same file; give two files", 2)
        for option, path in named:
            if same_file(csv_path, path):
                fail(f"--csv {str(csv_path)!r} is the {option} file; choose another CSV file", 2)
        check_writable_or_fail(csv_path, "--csv")
    for option, path in inputs.items():
        if path is not None and not os.path.exists(path):
            fail(f"{option} {str(path)!r}: no such file", 2)
    check_output_path(output, "--output", tuple(path for _, path in named))


def exclude_outputs(paths: list[Path], output: Path, csv_path: Optional[Path]) -> list[Path]:
    """``paths`` without this run's outputs. The figure of an earlier run at --output (a PNG that says
    dropblock made it) and the CSV being resumed are left out quietly; any other input that is an output
    is refused (exit 2): the run would overwrite it."""
    from dropblock.files import file_key, same_file
    from dropblock.images import file_is_dropblock_figure

    outputs = [(o, option) for o, option in ((output, "--output"), (csv_path, "--csv")) if o is not None]
    keys = {file_key(o) for o, _ in outputs} - {None}
    kept = []
    for path in paths:
        hit = next((o for o in outputs if (file_key(path) in keys and same_file(path, o[0]))), None)
        if hit is None:
            kept.append(path)
        elif hit[1] == "--output" and not file_is_dropblock_figure(path):
            fail(f"--output {str(output)!r} is the input image {str(path)!r} (the same file); choose another "
                 "output file", 2)
    return kept


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return getattr(value, "name", str(value))  # an enum (Pillow's resample filter)


def run_settings(plan: dict, methods: list[str], block_sizes: list[int], keep_probs: list[float]) -> dict:
    """What a sweep CSV records of this run (:data:`dropblock.sweep_csv.SETTINGS_KEYS`)."""
    from dropblock import __version__
    from dropblock.sweep_csv import labels_digest, weights_digest

    net = plan["net"]
    spec = net.preprocessing
    pre = ({f.name: _jsonable(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
           if dataclasses.is_dataclass(spec) else str(spec))
    return {"version": __version__, "model": plan["model"], "weights_sha256": weights_digest(net.module),
            "weights": str(net.weights), "preprocessing": pre, "layers": plan["layer_names"],
            "device": str(plan["device"]).split(":")[0], "seed": plan["seed"], "gamma": plan["gamma"],
            "methods": methods, "block_sizes": block_sizes, "keep_probs": keep_probs, "masks": plan["masks"],
            "labels": labels_digest(plan["labels"]), "images_per_pass": plan["images_per_pass"]}


def load_layers(choice, patterns: list[str], device: str, warn):
    """(model spec, the picked layers in call order, LoadedModel, torch device) for ``--layer`` names and globs
    (:func:`dropblock.sweep_layers.pick_layers`); ``warn`` names the layers a glob matched that run more than
    once (left out). Exit 2 for unknown names, a glob that matches nothing (close matches named), a layer that
    is not one map or a headless model; 1 when the model cannot be loaded."""
    from dropblock.cli.models import fail_for, load_or_fail
    from dropblock.cli.options import resolve_device
    from dropblock.errors import DropblockError
    from dropblock.sweep_layers import pick_layers

    device = resolve_device(device)
    net = load_or_fail(choice, device)
    if not net.class_names:
        fail(f"{net.spec} has no classifier outputs (a headless model): sweep compares its class predictions; pick "
             "a model with a classifier head (`dropblock layers` lists any model's layers)", 2)
    try:
        picks = pick_layers(net, patterns)
    except DropblockError as e:  # UnknownNameError, LayerError (2); ModelLoadError from its trace (1)
        fail_for(e)
    if picks.skipped:
        shown = ", ".join(picks.skipped[:4]) + (f" and {len(picks.skipped) - 4} more" if len(picks.skipped) > 4 else "")
        warn(f"--layer: left out {shown}: {'it runs' if len(picks.skipped) == 1 else 'they run'} more than once in a "
             "forward pass, so the output is not one map")
    return net.spec, picks.layers, net, device


def open_csv(csv_path: Optional[Path], resume: bool, settings: dict):
    """The run's SweepCsv (None without --csv), created or resumed; one line and exit 2 for a CSV that cannot
    be used (exists, in use, other settings, not a sweep CSV), 1 when it cannot be opened."""
    if csv_path is None:
        return None
    from dropblock.files import FileSafetyError
    from dropblock.sweep_csv import SettingsMismatch, SweepCsv, SweepCsvError

    try:
        return SweepCsv(csv_path, settings, resume=resume)
    except FileExistsError:
        fail(f"--csv {str(csv_path)!r} exists (another run may have just created it); pass --resume to continue "
             "it, or choose another file", 2)
    except SettingsMismatch as e:
        what = OPTION_OF.get(e.key, e.key)
        fail(f"--resume: {str(csv_path)!r} was made with {what} {_short(e.old)}, this run has {_short(e.new)}; "
             "resume with the same settings, or start another --csv", 2)
    except SweepCsvError as e:
        fail(f"--resume: {e}; start another --csv", 2)
    except FileSafetyError as e:
        fail(f"--csv {e}", 2)
    except OSError as e:
        from dropblock.errors import one_line

        fail(f"cannot open --csv {str(csv_path)!r}: {one_line(e)}", 1)


def _short(value) -> str:
    """A settings value for a message: hashes cut to 12 hex digits, lists comma-separated."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return repr(value) if isinstance(value, str) else str(value)
