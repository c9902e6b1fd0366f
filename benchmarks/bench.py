"""Benchmarks for dropblock: mask speed against torchvision, timm and a bare multiply, and CLI start-up times.

    python benchmarks/bench.py [--quick] [--device cpu|cuda] [--skip-cli] [--skip-sweep | --only-sweep] [--json FILE]

The masks (benchmarks/bench_masks.py) are timed forward and forward + backward; on CUDA ours runs the
Triton kernels (triton installed) beside the torch path.
Every number printed is a median measured in this run; every ratio compares medians from this run.
Contenders are interleaved (each repeat times all of them, in a rotating order) so background
load on a shared machine hits them alike. The CLI is timed through the ``dropblock`` console
script beside ``sys.executable``, so the numbers belong to the environment that runs this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import dropblock
from bench_masks import (
    BLOCK, DTYPES, PASSES, STAGES, P, Settings, mask_backend, mask_goals, mask_rows, mask_table, ratio, rotated,
    settings_for, sweep_table, tile_sweep,
)
from bench_sweep import (default_grid_row, group_goals, group_table, layer_sweep_goals, layer_sweep_rows,
                         layer_sweep_table, shared_pass_row)

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "sample_images" / "chelsea.jpg"

console = Console(soft_wrap=False, width=max(Console().width, 175))  # pipes and files get 80 columns otherwise


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
        "load_average_at_start": list(os.getloadavg()), "mask_backend": mask_backend(device),
        "triton": _version("triton"),
    }


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return None


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


def time_commands(commands: dict[str, list[str]], runs: int) -> dict[str, dict]:
    """Median seconds of each command over ``runs`` interleaved runs, after one warm-up run each; a command
    that cannot run gets ``seconds`` None and a note saying why."""
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
    for r in range(runs):
        for label in rotated(live, r):
            samples[label].append(run_once(commands[label])[0])
    for label, v in samples.items():
        results[label] = {"seconds": statistics.median(v), "runs": len(v), "note": ""}
    return {label: results[label] for label in commands}


def cli_medians(s: Settings) -> dict[str, dict]:
    """Median seconds of each command over ``cli_runs`` interleaved runs, after one warm-up run each."""
    with tempfile.TemporaryDirectory() as tmp:
        return time_commands(cli_commands(Path(tmp)), s.cli_runs)


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


# ---------------------------------------------------------------- report


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
            every = len(misses) == len(DTYPES) * len(STAGES)
            where += "; misses on all rows" if every else f"; misses on: {', '.join(misses)}"
        table.add_row(g["goal"], shown, verdict, where)
    return table


def machine_line(info: dict) -> str:
    return (f"CPU: {info['cpu']}, {info['cores']} cores (torch threads {info['torch_threads']}); "
            f"python {info['python']}, torch {info['torch']}, dropblock {info['dropblock']}; "
            f"device: {info['device']} ({info['device_name']}); masks: {info['mask_backend']} (triton {info['triton']}); "
            f"{info['executable']}; "
            f"load average {' '.join(f'{v:.2f}' for v in info['load_average_at_start'])}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the masks run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every number to FILE")
    parser.add_argument("--skip-cli", action="store_true",
                        help="time the masks only (where the dropblock command is not installed, e.g. a GPU machine)")
    parser.add_argument("--skip-sweep", action="store_true", help="leave out the `dropblock sweep` benchmark")
    parser.add_argument("--only-sweep", action="store_true", help="time `dropblock sweep` alone (masks and CLI left out)")
    parser.add_argument("--tile-sweep", action="store_true",
                        help="instead, time the Triton kernels over tile sizes (CUDA; to tune dropblock._triton)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible to torch")
    if args.tile_sweep and args.device != "cuda":
        parser.error("--tile-sweep times the Triton kernels: it needs --device cuda")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    s = settings_for(args.quick, args.device)
    info = machine_info(args.device)
    console.print(machine_line(info))
    if args.tile_sweep:
        sweep = tile_sweep(s)
        console.print(sweep_table(sweep))
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "settings": asdict(s), "tile_sweep": sweep}, indent=2))
        return
    rows, notes = ({}, {}) if args.only_sweep else mask_rows(s)
    for name in PASSES if rows else ():
        console.print(mask_table(rows[name], notes, s, name))
    layer_sweep = [] if args.skip_sweep else layer_sweep_rows(s)
    if layer_sweep:
        console.print(layer_sweep_table(layer_sweep, s))
    shared = None if args.skip_sweep else shared_pass_row(s)
    grid = default_grid_row(s) if shared is not None and args.device == "cuda" else None  # minutes on a CPU
    if shared is not None:
        console.print(group_table(shared, grid, s))
    cli = {} if args.skip_cli or args.only_sweep else cli_medians(s)
    if cli:
        console.print(cli_table(cli, s))
    goals = ((mask_goals(rows, args.device) if rows else []) + (layer_sweep_goals(layer_sweep) if layer_sweep else [])
             + (group_goals(shared, grid) if shared else []) + (cli_goals(cli) if cli else []))
    console.print(goals_table(goals))
    info["load_average_at_end"] = list(os.getloadavg())
    console.print(f"load average at the end: {' '.join(f'{v:.2f}' for v in info['load_average_at_end'])} "
                  f"(1, 5, 15 min; {info['cores']} cores: above that, other work shares the CPUs)")
    if args.json:
        report = {"machine": info, "settings": asdict(s) | {"quick": args.quick, "p": P, "block_size": BLOCK},
                  "masks": {"notes": notes, "rows": rows}, "sweep": layer_sweep, "shared_pass": shared,
                  "default_grid": grid, "cli": cli, "goals": goals}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
