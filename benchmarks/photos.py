"""Photos straight from a camera: ``show`` and ``compare`` on an 8000 x 6000 JPEG against chelsea.jpg.

    python benchmarks/photos.py [--repeats N] [--json FILE]

Goals (issue "One house with three rooms"): on the 48-megapixel photo, each command takes at most 2x
its time on chelsea.jpg (451 x 300), and its peak memory stays under 1 GB. Runs are interleaved (each
repeat runs every command once, in a rotating order) so background load hits them alike; times are
medians of wall time, memory the largest peak resident set of any run (from ``os.wait4``). This file
keeps its own timing loop rather than bench.time_commands: bench imports torch, and a child's peak
resident set counts the parent's pages from before its exec, so a parent holding torch would inflate
chelsea.jpg's figure by about 100 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHELSEA = ROOT / "sample_images" / "chelsea.jpg"
BIG_SIZE = (8000, 6000)
TIME_RATIO_GOAL = 2.0
MEMORY_GOAL_MB = 1024.0


def make_big_photo(folder: Path) -> Path:
    """chelsea.jpg upscaled to 8000 x 6000 and saved as a JPEG (quality 90), like a camera's file."""
    from PIL import Image

    path = folder / "camera-8000x6000.jpg"
    with Image.open(CHELSEA) as im:
        im.convert("RGB").resize(BIG_SIZE, Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one run; raises if the command fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024.0


def measure(repeats: int) -> dict:
    cli = str(Path(sys.executable).parent / "dropblock")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big = make_big_photo(folder)
        commands = {f"{verb} {name}": [cli, verb, str(image), "--output", str(folder / f"{verb}-{name}.png")]
                    for verb in ("show", "compare") for name, image in (("chelsea", CHELSEA), ("8000x6000", big))}
        times: dict[str, list[float]] = {label: [] for label in commands}
        peaks: dict[str, float] = {label: 0.0 for label in commands}
        labels = list(commands)
        for r in range(repeats):
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                seconds, peak = run(commands[label])
                times[label].append(seconds)
                peaks[label] = max(peaks[label], peak)
    rows = {label: {"seconds": statistics.median(times[label]), "peak_mb": peaks[label]} for label in commands}
    goals = []
    for verb in ("show", "compare"):
        big_row, small_row = rows[f"{verb} 8000x6000"], rows[f"{verb} chelsea"]
        ratio = big_row["seconds"] / small_row["seconds"]
        goals.append({"goal": f"{verb} 8000x6000 <= {TIME_RATIO_GOAL:g}x {verb} chelsea", "value": ratio,
                      "met": ratio <= TIME_RATIO_GOAL})
        goals.append({"goal": f"{verb} 8000x6000 peak memory < {MEMORY_GOAL_MB:g} MB", "value": big_row["peak_mb"],
                      "met": big_row["peak_mb"] < MEMORY_GOAL_MB})
    return {"repeats": repeats, "commands": rows, "goals": goals}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    for label, row in result["commands"].items():
        print(f"{label:24s} {row['seconds']:6.2f} s  peak {row['peak_mb']:7.0f} MB")
    for g in result["goals"]:
        print(f"{'met ' if g['met'] else 'MISS'}  {g['goal']}: {g['value']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
