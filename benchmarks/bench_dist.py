"""`dropblock sweep` on one machine, used fully (issue 19): torchrun ranks against one process, and memory
against the number of images. One run of each command, ratios side by side; rerunnable as it is:

    python benchmarks/bench_dist.py [--images 60] [--ranks 2] [--small 200] [--big 2000] [--skip-speed]
                                    [--skip-memory] [--json FILE]

Speed: the same generated folder swept by one process with 1 torch thread, by one process with the
default thread count, and by ``torchrun --nproc-per-node K`` (1 thread a rank: torchrun sets
OMP_NUM_THREADS=1). Images per second is taken from the whole command's wall time and, beside it, with
the start-up (torch import, model load) removed: (N - 4) / (T(N) - T(4)), from a second run of each
command on 4 images. The ranks' CSV is compared with each one-process CSV (identical rows are expected
against the 1-thread run: the thread count changes the order of a float sum, hence the last digits of KL).

Memory: peak resident memory (ru_maxrss) of one process sweeping a folder of ``--small`` and of ``--big``
generated images (small images, a small grid, -n 2: the number of images is what varies).

A ceiling beside them: ``--ranks`` independent 1-thread processes sweeping the folder at once (each all of
it), which share nothing: what this machine allows K processes, whatever the ranks' protocol costs.

Goals: ranks >= 1.7x one process's images per second on 2 cores; the big folder's peak within 10 % of
the small one's. Load on a shared machine moves every number: the load average is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SPEED_GRID = ["--model", "efficientnet-lite0", "--layer", "blocks.8", "--keep-probs", "1,0.9,0.8",
              "--block-sizes", "1,7", "--methods", "dropblock,dropout", "-n", "8"]
MEMORY_GRID = ["--model", "efficientnet-lite0", "--input-size", "64", "--layer", "blocks.8", "--keep-probs", "1,0.8",
               "--block-sizes", "3", "--methods", "dropblock", "-n", "2"]
SPEEDUP_GOAL, MEMORY_GOAL = 1.7, 0.10


def make_folder(folder: Path, count: int, size: tuple[int, int] = (96, 128)) -> Path:
    """``count`` distinct JPEGs of seeded smooth noise (distinct bytes: distinct seeds)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng(i)
        small = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size[::-1], Image.BILINEAR).save(folder / f"img{i:05d}.jpg", quality=90)
    return folder


def env(threads: int | None) -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS")}
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), out.get("PYTHONPATH", "")])
    if threads is not None:
        out["OMP_NUM_THREADS"] = str(threads)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(kind: str, ranks: int) -> list[str]:
    if kind == "ranks":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr",
                "127.0.0.1", "--master-port", str(free_port()), "-m", "dropblock"]
    return [sys.executable, "-m", "dropblock"]


def timed(cmd: list[str], environ: dict) -> float:
    """Wall seconds of one run (it must succeed)."""
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=environ, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - start


def data_rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def speed(work: Path, images: int, ranks: int) -> dict:
    """Each configuration on ``images`` images and on 4; images per second both ways; CSV comparisons."""
    big, tiny = make_folder(work / "speed", images), make_folder(work / "tiny", 4)
    configs = {"1 process, 1 thread": ("one", 1), f"{ranks} ranks, 1 thread each": ("ranks", None),
               f"1 process, {os.cpu_count()} threads": ("one", None)}
    out = {}
    for i, (name, (kind, threads)) in enumerate(configs.items()):
        args = ["sweep", *SPEED_GRID]
        csv = work / f"speed{i}.csv"
        t_big = timed([*command(kind, ranks), *args, str(big), "--csv", str(csv), "-o", str(work / f"s{i}.png")],
                      env(threads))
        t_tiny = timed([*command(kind, ranks), *args, str(tiny), "-o", str(work / f"t{i}.png")], env(threads))
        out[name] = {"seconds": t_big, "seconds_4_images": t_tiny, "images_per_s": images / t_big,
                     "images_per_s_after_start": (images - 4) / max(t_big - t_tiny, 1e-9), "csv": str(csv)}
    out[f"ceiling: {ranks} independent 1-thread processes"] = ceiling(big, images, ranks, work, out[list(out)[0]])
    names = list(out)
    ranked = out[names[1]]
    rows = data_rows(Path(ranked["csv"]))
    for name in (names[0], names[2]):
        other = data_rows(Path(out[name]["csv"]))
        ranked[f"rows_differing_from {name}"] = sum(a != b for a, b in zip(rows, other)) + abs(len(rows) - len(other))
        for key in ("images_per_s", "images_per_s_after_start"):
            ranked[f"{key} ratio vs {name}"] = ranked[key] / out[name][key]
    return {"images": images, "ranks": ranks, "grid": SPEED_GRID, "runs": out}


def ceiling(folder: Path, images: int, count: int, work: Path, single: dict) -> dict:
    """``count`` one-process, 1-thread sweeps of the whole folder at once, sharing nothing: the most ranks
    could reach on this machine (what the cores, caches and memory allow, whatever the protocol)."""
    start = time.perf_counter()
    procs = [subprocess.Popen([*command("one", 1), "sweep", *SPEED_GRID, str(folder), "-o", str(work / f"c{i}.png")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(1), cwd=ROOT)
             for i in range(count)]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"failed: {p.args}\n{p.stderr.read().decode()[-2000:]}")
    seconds = time.perf_counter() - start
    per_s = count * images / seconds
    after = count * (images - 4) / max(seconds - single["seconds_4_images"], 1e-9)
    return {"seconds": seconds, "images_per_s": per_s, "images_per_s_after_start": after,
            "images_per_s ratio vs 1 process, 1 thread": per_s / single["images_per_s"],
            "images_per_s_after_start ratio vs 1 process, 1 thread": after / single["images_per_s_after_start"]}


def peak_rss_mb(cmd: list[str], environ: dict) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of one run, measured in a fresh parent so no other child counts."""
    probe = ("import resource, subprocess, sys, time\nt = time.perf_counter()\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
             "assert r.returncode == 0, r.stderr.decode()[-2000:]\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)\n")
    r = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env=environ, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    mb, seconds = r.stdout.split()
    return float(mb), float(seconds)


def memory(work: Path, small: int, big: int) -> dict:
    out = {}
    for count in (small, big):
        folder = make_folder(work / f"mem{count}", count, size=(48, 64))
        cmd = [*command("one", 1), "sweep", *MEMORY_GRID, str(folder), "--csv", str(work / f"mem{count}.csv"),
               "-o", str(work / f"mem{count}.png")]
        mb, seconds = peak_rss_mb(cmd, env(1))
        out[count] = {"peak_mb": mb, "seconds": seconds, "images_per_s": count / seconds}
    growth = out[big]["peak_mb"] / out[small]["peak_mb"] - 1
    return {"grid": MEMORY_GRID, "runs": out, "growth": growth, "passed": growth <= MEMORY_GOAL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--big", type=int, default=2000)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    result = {"cores": os.cpu_count(), "load_average_at_start": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_speed:
            result["speed"] = speed(Path(tmp), a.images, a.ranks)
            print(json.dumps(result["speed"], indent=2), flush=True)
        if not a.skip_memory:
            result["memory"] = memory(Path(tmp), a.small, a.big)
            print(json.dumps(result["memory"], indent=2), flush=True)
    result["load_average_at_end"] = list(os.getloadavg())
    print(f"load average: start {result['load_average_at_start']}, end {result['load_average_at_end']}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
