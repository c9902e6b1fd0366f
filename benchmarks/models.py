"""Any model (issue "Your own CNN"), measured in one run:

    python benchmarks/models.py [--runs N] [--repeats N] [--seconds S] [--skip-cli] [--skip-hooks] [--json FILE]

Goals, each a ratio from this run (medians of wall seconds for the commands; for hooks against steps, the
median over rounds of the per-round ratio of CPU times):

- ``dropblock show chelsea.jpg --model torchvision:resnet50 --weights FILE --layer layer3`` at most 1.5x
  ``python -c "import torch, torchvision, matplotlib.figure"``;
- ``dropblock layers --model timm:resnet50`` at most 1.3x ``python -c "import torch, timm"``;
- :func:`~dropblock.models.forward_many` with 32 edits (``clean=False``: the same 32 rows) within 5 % of a
  bare forward hook that returns the 32 edited maps as a batch (forward_many / bare <= 1.05; the default
  call, with the unedited row as a 33rd, is reported beside it): ResNet-50 ``layer3.1`` and ``layer4.0.bn2``,
  EfficientNet-Lite0 ``blocks.8`` and ``head``, and torchvision's densenet121 inside ``denseblock4``
  (the bare hook broadcasting the joins as forward_many does; where torchvision imports).

The commands run through the ``dropblock`` console script beside ``sys.executable``, so they need
torchvision and timm in the environment that runs this file (``.venv-integration``, which
``.ci/integration`` builds, has both); where those do not import, the two CLI goals are reported as not
measured. The weights file is a random-init ResNet-50 state dict (what is timed is loading, not accuracy).
Runs are interleaved: each round runs every command once, in a rotating order, so background load on
a shared machine hits them alike; forward_many and the bare hook are interleaved the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import IMAGE, machine_info, rotated, time_commands  # noqa: E402

SHOW_GOAL, LAYERS_GOAL, HOOKS_GOAL = 1.5, 1.3, 1.05
HOOK_CASES = [("resnet50", "layer3.1"), ("resnet50", "layer4.0.bn2"), ("efficientnet-lite0", "blocks.8"),
              ("efficientnet-lite0", "head"), ("torchvision:densenet121", "features.denseblock4.denselayer8")]
EDITS = 32


# ---------------------------------------------------------------- the command line

def cli_commands(tmp: Path) -> dict[str, list[str]]:
    """The timed command lines, by label; writes the ResNet-50 weights file they need into ``tmp``."""
    py, cli = sys.executable, str(Path(sys.executable).parent / "dropblock")
    weights = tmp / "resnet50.pth"
    try:
        import torchvision

        torch.save(torchvision.models.resnet50().state_dict(), weights)
    except Exception:  # noqa: BLE001 - the show command then fails, and says why
        pass
    return {
        "import torch, torchvision, matplotlib.figure": [py, "-c", "import torch, torchvision, matplotlib.figure"],
        "show --layer on torchvision:resnet50 --weights": [
            cli, "show", str(IMAGE), "--model", "torchvision:resnet50", "--weights", str(weights), "--layer", "layer3",
            "--output", str(tmp / "show.png")],
        "import torch, timm": [py, "-c", "import torch, timm"],
        "layers --model timm:resnet50": [cli, "layers", "--model", "timm:resnet50"],
    }


def cli_medians(runs: int) -> dict[str, dict]:
    """Median wall seconds of each command over ``runs`` interleaved rounds, after one warm-up run each."""
    with tempfile.TemporaryDirectory() as folder:
        return time_commands(cli_commands(Path(folder)), runs)


def cli_goals(rows: dict[str, dict]) -> list[dict]:
    """The two CLI ratios against their goals (None where a command could not run)."""
    pairs = [("show --layer on torchvision:resnet50 --weights", "import torch, torchvision, matplotlib.figure",
              SHOW_GOAL), ("layers --model timm:resnet50", "import torch, timm", LAYERS_GOAL)]
    goals = []
    for command, baseline, limit in pairs:
        a, b = rows[command]["seconds"], rows[baseline]["seconds"]
        value = a / b if a is not None and b else None
        goals.append({"goal": f"{command} <= {limit:g}x {baseline}", "value": value,
                      "passed": None if value is None else value <= limit,
                      "note": rows[command]["note"] or rows[baseline]["note"]})
    return goals


# ---------------------------------------------------------------- forward_many against a bare hook

def _network(name: str) -> torch.nn.Module | None:
    """EfficientNet-Lite0 with its packaged weights; the others random-init (no download needed); None
    where torchvision does not import."""
    from dropblock.models import build_model, load_model

    torch.manual_seed(0)
    if name == "efficientnet-lite0":
        return load_model(name)
    if name.startswith("torchvision:"):
        try:
            import torchvision
        except Exception:  # noqa: BLE001 - not in this environment: the case is reported as not measured
            return None
        return getattr(torchvision.models, name.split(":")[1])().eval()
    return build_model(name)


def _timed(call) -> float:
    """CPU seconds of this process for one call: with one torch thread that is the work done,
    without the time a shared virtual machine spends running others."""
    start = time.process_time()
    call()
    return time.process_time() - start


def _mask_edit(seed: int):
    """What ``show --layer`` does to each copy: draw a DropBlock mask (p 0.1, block 7), apply it, rescale."""
    from dropblock.effect import apply_mask, mask_scale
    from dropblock.methods import draw_mask

    generator = torch.Generator().manual_seed(seed)

    def edit(feature: torch.Tensor) -> torch.Tensor:
        draw = draw_mask("dropblock", tuple(feature.shape), 0.1, block_size=7, generator=generator)
        return apply_mask(feature, draw.keep, mask_scale("dropblock", draw.keep, 0.1))
    return edit


def _bare(net: torch.nn.Module, x: torch.Tensor, module: torch.nn.Module, edits: list) -> torch.Tensor:
    """The reference: one forward hook returning the edited maps as a batch, joins broadcast as
    forward_many does, no check, no clean row."""
    from dropblock.models.edit import BroadcastJoins

    mode = BroadcastJoins(len(edits))

    def hook(m, args, out):
        mode.__enter__()
        return torch.cat([edit(out.clone()) for edit in edits])

    handle = module.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            return net(x)
    finally:
        handle.remove()
        mode.__exit__(None, None, None)


def _paired(calls: dict, rounds: int, seconds: float) -> dict[str, float]:
    """Median CPU ms of each call (one is ``bare``), each round running them back to back in a rotating
    order after one warm-up call each, and per call the median over rounds of the per-round ratio
    call / bare: a paired comparison, so a slow stretch of a shared machine that hits one round hits both
    of its calls. At least ``rounds`` rounds, and more until ``seconds`` have passed (at most 400)."""
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {label: [] for label in calls}
    start, r = time.perf_counter(), 0
    while r < rounds or (time.perf_counter() - start < seconds and r < 400):
        for label in rotated(list(calls), r):
            samples[label].append(_timed(calls[label]))
        r += 1
    result = {label: 1000 * statistics.median(times) for label, times in samples.items()}
    for label in calls:
        result[f"{label}/bare"] = statistics.median(a / b for a, b in zip(samples[label], samples["bare"]))
    return {**result, "rounds": r}


def hook_rows(repeats: int, seconds: float) -> list[dict]:
    """Median CPU ms of forward_many and of the bare hook with 32 edits, and the median per-round ratio, per
    case: forward_many as the bare hook runs (``clean=False``: the 32 edits alone), and with the unedited row
    that it returns by default (33 rows: informative, not a goal); with a trivial edit (the paths alone) and with DropBlock masks (what the commands run). One torch
    thread: on a small shared machine, intra-op threads that contend with other processes make passes vary."""
    from dropblock.models import forward_many, preprocess

    torch.set_num_threads(1)
    rows = []
    x = preprocess("resnet50", _chelsea())[0]
    for name, layer in HOOK_CASES:
        net = _network(name)
        if net is None:
            continue
        xi = preprocess(name, _chelsea())[0] if name == "efficientnet-lite0" else x
        module = net.get_submodule(getattr(net, "layer_paths", {}).get(layer, layer))
        row = {"model": name, "layer": layer, "edits": EDITS}
        for kind, make in (("path", lambda: lambda f: f.mul_(0.9)), ("masks", lambda: _mask_edit(0))):
            calls = {"ours": lambda make=make: forward_many(net, xi, layer, [make()] * EDITS, batch_size=EDITS,
                                                            clean=False),
                     "clean": lambda make=make: forward_many(net, xi, layer, [make()] * EDITS, batch_size=EDITS),
                     "bare": lambda make=make: _bare(net, xi, module, [make()] * EDITS)}
            ms = _paired(calls, repeats, seconds)
            row.update({f"{kind} bare_ms": ms["bare"], f"{kind} ours_ms": ms["ours"],
                        f"{kind} ours/bare": ms["ours/bare"], f"{kind} clean/bare": ms["clean/bare"],
                        f"{kind} rounds": ms["rounds"]})
        rows.append(row)
    return rows


def _chelsea():
    import numpy as np
    from PIL import Image

    with Image.open(IMAGE) as im:
        return np.asarray(im.convert("RGB"))


def hook_goals(rows: list[dict]) -> list[dict]:
    """The worst row's ratio, for the paths alone and with DropBlock masks."""
    goals = []
    for kind, what in (("path", "a trivial edit"), ("masks", "DropBlock masks")):
        key = f"{kind} ours/bare"
        worst = max(rows, key=lambda row: row[key])
        goals.append({"goal": f"forward_many(clean=False) <= {HOOKS_GOAL:g}x a bare hook returning {EDITS} edits, {what}",
                      "value": worst[key], "passed": worst[key] <= HOOKS_GOAL,
                      "note": f"worst: {worst['model']} {worst['layer']}; {len(rows)} cases"})
    return goals


# ---------------------------------------------------------------- report

def print_report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False, width=max(Console().width, 140))
    if result.get("cli"):
        table = Table(title="Commands: median wall seconds", title_justify="left")
        for col in ("command", "seconds", "note"):
            table.add_column(col, justify="right" if col == "seconds" else "left")
        for label, row in result["cli"].items():
            table.add_row(label, "—" if row["seconds"] is None else f"{row['seconds']:.2f}", row["note"])
        console.print(table)
    if result.get("hooks"):
        table = Table(title=f"forward_many against a bare hook, {EDITS} edits in one batch: median CPU ms, one "
                            "thread; ours / bare is the median per-round ratio", title_justify="left")
        for col in ("model", "layer", "edits", "bare", "ours", "ours / bare", "+ clean row", "rounds",
                    "bare, masks", "ours, masks", "ours / bare, masks", "+ clean row, masks", "rounds, masks"):
            table.add_column(col, justify="left" if col in ("model", "layer") else "right")
        formats = {"bare_ms": ".1f", "ours_ms": ".1f", "ours/bare": ".3f", "clean/bare": ".3f", "rounds": "d"}
        for row in result["hooks"]:
            table.add_row(row["model"], row["layer"], str(row["edits"]),
                          *[format(row[f"{kind} {key}"], spec) for kind in ("path", "masks")
                            for key, spec in formats.items()])
        console.print(table)
    for goal in result["goals"]:
        verdict = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "[yellow]not measured[/yellow]"}
        value = "—" if goal["value"] is None else f"{goal['value']:.3f}x"
        console.print(f"{verdict[goal['passed']]}  {goal['goal']}: {value}  {goal['note']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds of the commands (default 7)")
    parser.add_argument("--repeats", type=int, default=21, help="least rounds of forward_many/bare per case (default 21)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="more rounds of forward_many/bare until this many seconds per case (default 20)")
    parser.add_argument("--skip-cli", action="store_true", help="only forward_many against the bare hook")
    parser.add_argument("--skip-hooks", action="store_true", help="only the commands")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    result: dict = {"machine": machine_info("cpu"), "goals": []}
    if not args.skip_cli:
        result["cli"] = cli_medians(args.runs)
        result["goals"] += cli_goals(result["cli"])
    if not args.skip_hooks:
        result["hooks"] = hook_rows(args.repeats, args.seconds)
        result["goals"] += hook_goals(result["hooks"])
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
