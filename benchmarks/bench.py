"""Benchmarks for dropblock: mask speed against torchvision, timm and a bare multiply, and CLI start-up times.

    python benchmarks/bench.py [--quick] [--device cpu|cuda] [--skip-cli] [--skip-sweep | --only-sweep] [--json FILE]

Every number printed is a median measured in this run; every ratio compares medians from this run.
Contenders are interleaved (each repeat times all of them, in a rotating order) so background
load on a shared machine hits them alike. The CLI is timed through the ``dropblock`` console
script beside ``sys.executable``, so the numbers belong to the environment that runs this file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.table import Table

import dropblock
import dropblock._native

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "sample_images" / "chelsea.jpg"
STAGES = [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]  # ResNet-50 stages at 224x224
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
P, BLOCK = 0.1, 7
OURS, OURS_EXPECTED, TORCHVISION, TIMM, FLOOR = "ours", "ours expected", "torchvision", "timm", "floor x*mask"
OURS_NO_C = "ours, no C"  # the NumPy/torch fallback that installs without a C compiler (CPU only, not a goal)

console = Console(soft_wrap=False, width=max(Console().width, 175))  # pipes and files get 80 columns otherwise


@dataclass(frozen=True)
class Settings:
    device: str
    batch: int
    warmup: int
    repeats: int
    cli_runs: int
    min_sample_s: float  # a timed sample loops a call until it lasts at least this long


def settings_for(quick: bool, device: str) -> Settings:
    """Repeats and batch size for a device; --quick trims the repeats, never the shapes."""
    batch = 64 if device == "cuda" else 8
    if quick:
        return Settings(device, batch, warmup=1, repeats=5, cli_runs=5, min_sample_s=0.002)
    return Settings(device, batch, warmup=3, repeats=25, cli_runs=7, min_sample_s=0.005)


def machine_info(device: str) -> dict:
    """CPU model, cores, torch version and the device the masks run on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = torch.cuda.get_device_name() if device == "cuda" else cpu
    return {
        "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "dropblock": dropblock.__version__,
        "device": device, "device_name": name, "executable": sys.executable,
        "load_average_at_start": list(os.getloadavg()),
        "mask_backend": "C helper" if dropblock._native.blocks is not None else "NumPy fallback (C helper not built)",
    }


# ---------------------------------------------------------------- contenders


def optional_contenders() -> tuple[dict[str, Callable], dict[str, str]]:
    """torchvision's and timm's DropBlock where they import (any failure is a note, not a crash)."""
    found, notes = {}, {}
    try:
        from torchvision.ops import drop_block2d
        found[TORCHVISION] = lambda x: drop_block2d(x, P, BLOCK)
        notes[TORCHVISION] = f"torchvision {sys.modules['torchvision'].__version__}"
    except Exception as e:  # torchvision beside another torch raises RuntimeError, not ImportError
        notes[TORCHVISION] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        import timm
        from timm.layers import drop_block_2d
        found[TIMM] = lambda x: drop_block_2d(x, P, BLOCK, couple_channels=False)
        notes[TIMM] = f"timm {timm.__version__} (couple_channels=False)"
    except Exception as e:
        notes[TIMM] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return found, notes


def without_c_helper(fn: Callable) -> Callable:
    """``fn`` run with dropblock's C helper switched off (its NumPy/torch fallback)."""
    def call(t: torch.Tensor):
        saved, dropblock._native.blocks = dropblock._native.blocks, None
        try:
            return fn(t)
        finally:
            dropblock._native.blocks = saved
    return call


def contenders_for(x: torch.Tensor, optional: dict[str, Callable]) -> dict[str, Callable]:
    """Every contender as a one-argument call on x; the floor's mask is drawn once, in x's dtype."""
    ours = dropblock.DropBlock2d(P, BLOCK).train()
    ours_expected = dropblock.DropBlock2d(P, BLOCK, rescale="expected").train()
    mask = (torch.rand_like(x, dtype=torch.float32) >= P).to(x.dtype)
    extra = {OURS_NO_C: without_c_helper(ours)} if x.device.type == "cpu" and dropblock._native.blocks else {}
    return {OURS: ours, OURS_EXPECTED: ours_expected, **extra, **optional, FLOOR: lambda t: t * mask}


# ---------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def rotated(names: list[str], r: int) -> list[str]:
    """``names`` starting at index r (mod its length): repeat r's order when interleaving."""
    k = r % len(names) if names else 0
    return names[k:] + names[:k]


def time_loop(fn: Callable, x: torch.Tensor, loops: int, device: str) -> float:
    """Seconds per call over ``loops`` back-to-back calls, synchronized at both ends on CUDA."""
    sync(device)
    start = time.perf_counter()
    for _ in range(loops):
        fn(x)
    sync(device)
    return (time.perf_counter() - start) / loops


def calibrate(fn: Callable, x: torch.Tensor, s: Settings) -> int:
    """Warm up, then the number of calls per timed sample so a sample lasts ``min_sample_s``."""
    per_call = min(time_loop(fn, x, 1, s.device) for _ in range(max(s.warmup, 1)))
    return max(1, min(1000, math.ceil(s.min_sample_s / max(per_call, 1e-9))))


def interleaved_medians(fns: dict[str, Callable], x: torch.Tensor, s: Settings) -> dict[str, float | str]:
    """Median ms per call of each contender; repeats rotate the order. A contender that raises gets its error."""
    loops, results = {}, {}
    for name, fn in fns.items():
        try:
            loops[name] = calibrate(fn, x, s)
        except Exception as e:
            results[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    names = list(loops)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(s.repeats):
        for name in rotated(names, r):
            samples[name].append(time_loop(fns[name], x, loops[name], s.device))
    results.update({n: 1000 * statistics.median(v) for n, v in samples.items()})
    return results


# ---------------------------------------------------------------- masks


def ratio(a: float | str | None, b: float | str | None) -> float | None:
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else None


def mask_rows(s: Settings) -> tuple[list[dict], dict[str, str]]:
    """One row per (stage shape, dtype): median ms of every contender and the ratios."""
    optional, notes = optional_contenders()
    rows = []
    for dtype_name, dtype in DTYPES.items():
        for c, h, w in STAGES:
            torch.manual_seed(0)
            x = torch.randn(s.batch, c, h, w, device=s.device, dtype=dtype)
            ms = interleaved_medians(contenders_for(x, optional), x, s)
            rows.append({
                "shape": [s.batch, c, h, w], "dtype": dtype_name, "ms": ms,
                "ours/floor": ratio(ms.get(OURS), ms.get(FLOOR)),
                "ours expected/floor": ratio(ms.get(OURS_EXPECTED), ms.get(FLOOR)),
                "ours no C/floor": ratio(ms.get(OURS_NO_C), ms.get(FLOOR)),
                "torchvision/ours": ratio(ms.get(TORCHVISION), ms.get(OURS)),
                "timm/ours": ratio(ms.get(TIMM), ms.get(OURS)),
            })
            del x
    return rows, notes


def mask_goals(rows: list[dict], device: str) -> list[dict]:
    """CPU: ours >= 10x faster than torchvision and <= 3x the floor on every row; CUDA: <= 2x the floor."""
    limit = 2.0 if device == "cuda" else 3.0
    goals = [worst_goal(rows, key, f"{key} <= {limit}x on every shape/dtype", limit, higher_is_better=False)
             for key in ("ours/floor", "ours expected/floor")]
    if device == "cpu":
        goals.append(worst_goal(rows, "torchvision/ours", "ours >= 10x faster than torchvision on every shape/dtype",
                                10.0, higher_is_better=True))
    return goals


def worst_goal(rows: list[dict], key: str, text: str, limit: float, higher_is_better: bool) -> dict:
    """A goal's verdict from its worst row (None where any row lacks the number)."""
    values = [(r[key], f"{r['dtype']} {tuple(r['shape'][1:])}") for r in rows]
    if any(v is None for v, _ in values):
        return {"goal": text, "value": None, "where": "", "passed": None, "note": "not measured"}
    value, where = (min if higher_is_better else max)(values)
    passed = value >= limit if higher_is_better else value <= limit
    misses = [w for v, w in values if (v < limit if higher_is_better else v > limit)]
    return {"goal": text, "value": value, "where": where, "passed": passed, "misses": misses}


def mask_table(rows: list[dict], notes: dict[str, str], s: Settings) -> Table:
    names = [OURS, OURS_EXPECTED, OURS_NO_C, TORCHVISION, TIMM, FLOOR]
    table = Table(title=f"Masks: p={P}, block={BLOCK}, batch {s.batch}, {s.device}, median ms of {s.repeats} "
                        f"(torchvision: {notes[TORCHVISION]}; timm: {notes[TIMM]})", title_justify="left")
    for col in ["dtype", "CxHxW", *names, "ours/floor", "expected/floor", "no C/floor", "tv/ours", "timm/ours"]:
        table.add_column(col, justify="left" if col in ("dtype", "CxHxW") else "right")
    for r in rows:
        cells = [fmt_ms(r["ms"].get(n)) for n in names]
        ratios = [fmt_x(r[k]) for k in ("ours/floor", "ours expected/floor", "ours no C/floor", "torchvision/ours",
                                        "timm/ours")]
        table.add_row(r["dtype"], "x".join(map(str, r["shape"][1:])), *cells, *ratios)
    return table


# ---------------------------------------------------------------- CLI


def cli_commands(tmp: Path) -> dict[str, list[str]]:
    """The timed command lines, by label."""
    py, cli = sys.executable, str(Path(sys.executable).parent / "dropblock")
    return {
        "import torch": [py, "-c", "import torch"],
        "import torch, matplotlib.figure": [py, "-c", "import torch, matplotlib.figure"],
        "dropblock --help": [cli, "--help"],
        "dropblock gamma --feature-size 14 --samples 100000": [cli, "gamma", "--feature-size", "14", "--samples", "100000"],
        "dropblock show chelsea.jpg": [cli, "show", str(IMAGE), "--output", str(tmp / "show.png")],
        "dropblock show chelsea.jpg --layer blocks.8": [cli, "show", str(IMAGE), "--layer", "blocks.8",
                                                        "--output", str(tmp / "show_layer.png")],
    }


def run_once(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, done


def unavailable_reason(done: subprocess.CompletedProcess) -> str:
    """Why a warm-up run failed, in one line ("No such command" means the command is not there yet)."""
    text = (done.stderr or done.stdout).strip()
    if "No such command" in text:
        return "not available (no such command)"
    last = text.splitlines()[-1] if text else ""
    return f"not available (exit {done.returncode}: {last[:120]})"


def cli_medians(s: Settings) -> dict[str, dict]:
    """Median seconds of each command over ``cli_runs`` interleaved runs, after one warm-up run each."""
    with tempfile.TemporaryDirectory() as tmp:
        commands = cli_commands(Path(tmp))
        results, live = {}, []
        for label, cmd in commands.items():
            try:
                _, done = run_once(cmd)
            except OSError as e:
                results[label] = {"seconds": None, "note": f"not available ({e})"}
                continue
            if done.returncode == 0:
                live.append(label)
            else:
                results[label] = {"seconds": None, "note": unavailable_reason(done)}
        samples: dict[str, list[float]] = {label: [] for label in live}
        for r in range(s.cli_runs):
            for label in rotated(live, r):
                samples[label].append(run_once(commands[label])[0])
        for label, v in samples.items():
            results[label] = {"seconds": statistics.median(v), "runs": len(v), "note": ""}
    return {label: results[label] for label in commands}


def cli_goals(cli: dict[str, dict]) -> list[dict]:
    """The start-up goals, each against a baseline measured in this run."""
    sec = {label: r["seconds"] for label, r in cli.items()}
    torch_s, mpl_s = sec["import torch"], sec["import torch, matplotlib.figure"]
    gamma = sec["dropblock gamma --feature-size 14 --samples 100000"]
    return [
        goal("gamma minus import torch <= 2 s", gamma - torch_s if gamma and torch_s else None, 2.0, "s"),
        goal("show <= 1.3x import torch+matplotlib", ratio(sec["dropblock show chelsea.jpg"], mpl_s), 1.3, "x"),
        goal("show --layer blocks.8 <= 1.5x import torch+matplotlib",
             ratio(sec["dropblock show chelsea.jpg --layer blocks.8"], mpl_s), 1.5, "x"),
        goal("--help <= 0.15x import torch", ratio(sec["dropblock --help"], torch_s), 0.15, "x"),
    ]


def goal(text: str, value: float | None, limit: float, unit: str) -> dict:
    passed = None if value is None else value <= limit
    return {"goal": text, "value": value, "unit": unit, "passed": passed, "note": "" if value is not None else "not measured"}


def cli_table(cli: dict[str, dict], s: Settings) -> Table:
    table = Table(title=f"CLI wall time, median of {s.cli_runs} interleaved runs", title_justify="left")
    table.add_column("command")
    table.add_column("median s", justify="right")
    table.add_column("note")
    for label, r in cli.items():
        table.add_row(label, "-" if r["seconds"] is None else f"{r['seconds']:.3f}", r["note"])
    return table


# ---------------------------------------------------------------- sweep (issue 11: `dropblock sweep`)
# The sweep's time per pass through the rest of the network, against a bare batched pass of the same
# batch size on the same layer's activation: what drawing masks, applying them and the bookkeeping add.

SWEEP_MODEL, SWEEP_LAYER, SWEEP_BATCH, SWEEP_MASKS = "efficientnet-lite0", "blocks.8", 32, 16
SWEEP_GOAL = 1.25


def sweep_row(s: Settings) -> dict:
    """Median ms of one image's sweep (10 settings x 16 masks = 5 passes of 32, the prefix once) and of
    5 bare suffix passes of 32, interleaved; the ratio is the sweep's cost per suffix pass over the bare one."""
    import numpy as np
    from PIL import Image

    from dropblock.models import load_model, preprocess
    from dropblock.sweep import settings_grid, sweep_image

    net = load_model(SWEEP_MODEL, device=s.device)
    with Image.open(IMAGE) as im:
        pixels = np.asarray(im.convert("RGB"))
    settings = [st for st in settings_grid(["dropblock", "dropout", "spatial-dropout", "cutout"], [1, 7], [0.9, 0.8])]
    passes = len(settings) * SWEEP_MASKS // SWEEP_BATCH
    x, _ = preprocess(SWEEP_MODEL, pixels)
    step = net.layer_steps[SWEEP_LAYER]
    with torch.inference_mode():
        feature = net.forward_range(x.to(s.device), 0, step + 1)
        batch = feature.expand(SWEEP_BATCH, -1, -1, -1).contiguous()

    def bare(_):
        with torch.inference_mode():
            for _ in range(passes):
                net.forward_range(batch, step + 1)

    def sweep(_):
        sweep_image(net, SWEEP_MODEL, pixels, SWEEP_LAYER, settings, masks=SWEEP_MASKS, seed=0, content="bench",
                    device=s.device, batch_size=SWEEP_BATCH)

    ms = interleaved_medians({"sweep": sweep, "bare suffix": bare}, batch, s)
    return {"model": SWEEP_MODEL, "layer": SWEEP_LAYER, "feature": list(feature.shape[1:]), "batch": SWEEP_BATCH,
            "settings": len(settings), "masks": SWEEP_MASKS, "passes": passes, "ms": ms,
            "sweep/bare": ratio(ms.get("sweep"), ms.get("bare suffix"))}


def sweep_table(row: dict, s: Settings) -> Table:
    table = Table(title=f"Sweep: {row['model']} {row['layer']} ({'x'.join(map(str, row['feature']))}), "
                        f"{row['settings']} settings x {row['masks']} masks = {row['passes']} passes of {row['batch']}, "
                        f"{s.device}, median ms of {s.repeats}", title_justify="left")
    for col in ("sweep (one image)", f"{row['passes']} bare suffix passes", "per pass: sweep / bare"):
        table.add_column(col, justify="right")
    table.add_row(fmt_ms(row["ms"].get("sweep")), fmt_ms(row["ms"].get("bare suffix")), fmt_x(row["sweep/bare"]))
    return table


def sweep_goal(row: dict) -> dict:
    return goal(f"sweep per suffix pass <= {SWEEP_GOAL}x a bare batched suffix pass", row["sweep/bare"], SWEEP_GOAL, "x")


# ---------------------------------------------------------------- report


def fmt_ms(v: float | str | None) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else f"{v:.3f}"


def fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def goals_table(goals: list[dict]) -> Table:
    table = Table(title="Goals", title_justify="left")
    for col in ("goal", "measured", "verdict", "where / misses"):
        table.add_column(col)
    for g in goals:
        value = g["value"]
        shown = "-" if value is None else (f"{value:.2f} s" if g.get("unit") == "s" else f"{value:.2f}x")
        verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "n/a"}[g["passed"]]
        where = g.get("note") or (f"worst: {g['where']}" if g.get("where") else "")
        misses = g.get("misses") or []
        if misses:
            where += "; misses on all rows" if len(misses) == len(DTYPES) * len(STAGES) else f"; misses on: {', '.join(misses)}"
        table.add_row(g["goal"], shown, verdict, where)
    return table


def machine_line(info: dict) -> str:
    return (f"CPU: {info['cpu']}, {info['cores']} cores (torch threads {info['torch_threads']}); "
            f"python {info['python']}, torch {info['torch']}, dropblock {info['dropblock']}; "
            f"device: {info['device']} ({info['device_name']}); masks: {info['mask_backend']}; {info['executable']}; "
            f"load average {' '.join(f'{v:.2f}' for v in info['load_average_at_start'])}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the masks run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every number to FILE")
    parser.add_argument("--skip-cli", action="store_true",
                        help="time the masks only (where the dropblock command is not installed, e.g. a GPU machine)")
    parser.add_argument("--skip-sweep", action="store_true", help="leave out the sweep benchmark")
    parser.add_argument("--only-sweep", action="store_true", help="time the sweep alone (masks and CLI left out)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    s = settings_for(args.quick, args.device)
    info = machine_info(args.device)
    console.print(machine_line(info))
    rows, notes = ([], {}) if args.only_sweep else mask_rows(s)
    if rows:
        console.print(mask_table(rows, notes, s))
    sweep = {} if args.skip_sweep else sweep_row(s)
    if sweep:
        console.print(sweep_table(sweep, s))
    cli = {} if args.skip_cli or args.only_sweep else cli_medians(s)
    if cli:
        console.print(cli_table(cli, s))
    goals = ((mask_goals(rows, args.device) if rows else []) + ([sweep_goal(sweep)] if sweep else [])
             + (cli_goals(cli) if cli else []))
    console.print(goals_table(goals))
    info["load_average_at_end"] = list(os.getloadavg())
    console.print(f"load average at the end: {' '.join(f'{v:.2f}' for v in info['load_average_at_end'])} "
                  f"(1, 5, 15 min; {info['cores']} cores: above that, other work shares the CPUs)")
    if args.json:
        report = {"machine": info, "settings": asdict(s) | {"quick": args.quick, "p": P, "block_size": BLOCK},
                  "masks": {"notes": notes, "rows": rows}, "sweep": sweep, "cli": cli, "goals": goals}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
