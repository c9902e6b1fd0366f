"""`sweep` under torchrun (dropblock.distributed, dropblock.cli.ranks): two gloo processes on the CPU write the
CSV a one-process run writes, row for row, resume one, and fail together with one line; the exchange
protocol and the environment checks on their own. Offline, 127.0.0.1 and a free port, a tiny model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from dropblock.distributed import (
    DEFAULT_TIMEOUT_S, Ranks, RanksLost, Stop, Stopped, joined, launched, threads_per_process, timeout_s,
)
from test_loader import photos
from usercode import write_code

TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
PICKY = '''
import torch
from tinynet import Tiny

class Picky(Tiny):
    """NaN logits for a bright image: the sweep's one-line failure, on the rank that gets it."""
    def forward(self, x):
        y = super().forward(x)
        return y if float(x.mean()) < 0.5 else y * float("nan")

def build():
    torch.manual_seed(0)
    return Picky()
'''


# ---- the library's pieces, in one process ----

def test_launched_only_with_all_of_torchruns_variables_and_several_processes():
    """Breaks if a lone process (WORLD_SIZE 1, or a stray RANK) would try to join a group."""
    assert launched(TORCHRUN_ENV)
    assert not launched({**TORCHRUN_ENV, "WORLD_SIZE": "1"})
    assert not launched({**TORCHRUN_ENV, "WORLD_SIZE": "two"})
    assert not launched({k: v for k, v in TORCHRUN_ENV.items() if k != "MASTER_PORT"})
    assert not launched({})


def test_joined_outside_torchrun_touches_nothing():
    import torch
    import torch.distributed as dist

    threads = torch.get_num_threads()
    with joined("cpu", environ={}) as ranks:
        assert ranks is None and not dist.is_initialized() and torch.get_num_threads() == threads


def test_timeout_and_threads_from_the_environment():
    """One torch thread per process when torchrun starts 2 on 2 cores (OMP_NUM_THREADS, or cores // local
    processes without it); a bad timeout is refused."""
    assert timeout_s({}) == DEFAULT_TIMEOUT_S and timeout_s({"DROPBLOCK_DIST_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ValueError, match="DROPBLOCK_DIST_TIMEOUT"):
            timeout_s({"DROPBLOCK_DIST_TIMEOUT": bad})
    assert threads_per_process(2, cores=2, environ={"OMP_NUM_THREADS": "1"}) == 1
    assert threads_per_process(2, cores=2, environ={}) == 1
    assert threads_per_process(2, cores=16, environ={}) == 8
    assert threads_per_process(4, cores=2, environ={"OMP_NUM_THREADS": "x"}) == 1


def fake_group(rank: int, world: int, others: list):
    """A Ranks whose exchanges return ``others`` (one message list per exchange, this rank's filled in)."""
    sent = []

    def exchange(message, n):
        assert n == world
        messages = list(others.pop(0))
        messages[rank] = message
        sent.append(message)
        return messages

    return Ranks(rank, world, rank, world, exchange=exchange), sent


def test_a_stop_reaches_every_rank_at_its_next_exchange_and_ends_the_exchanges():
    """Breaks if a stop were taken for a payload (a rank would go on to a collective nobody else enters), or if
    a rank exchanged again after one."""
    ranks, sent = fake_group(0, 3, [[None, ("ok", "b"), ("ok", "c")],
                                    [None, ("ok", "b2"), ("stop", 2, "bad --layer")]])
    assert ranks.leader and ranks.shard(list(range(8))) == [0, 3, 6]
    assert ranks.round("a") == ["a", "b", "c"]
    with pytest.raises(Stopped) as info:
        ranks.round("a2")
    assert info.value.code == 2 and info.value.stops == [Stop(2, 2, "bad --layer")]
    assert info.value.payloads == {0: "a2", 1: "b2"}
    assert ranks.stopped and ranks.stop(1, "late") == []  # no exchange after a stop
    with pytest.raises(RuntimeError):
        ranks.round("again")
    assert sent == [("ok", "a"), ("ok", "a2")]


def test_stop_returns_every_stop_of_its_exchange_and_a_broken_exchange_is_ranks_lost():
    ranks, _ = fake_group(1, 2, [[("stop", 130, ""), None]])
    assert ranks.shard(list(range(5))) == [1, 3]
    assert ranks.stop(1, "boom") == [Stop(0, 130, ""), Stop(1, 1, "boom")]

    def broken(message, n):
        raise RuntimeError("[gloo] Timed out waiting 5000ms for recv operation")

    ranks = Ranks(0, 2, 0, 2, exchange=broken)
    with pytest.raises(RanksLost, match="lost contact with the other ranks.*Timed out"):
        ranks.round(None)
    assert ranks.stopped


# ---- two processes ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """This checkout's dropblock, one torch thread (the thread count changes a float sum's order, so equal
    rows need equal counts), no torchrun variables from outside, no terminal."""
    env = {k: v for k, v in os.environ.items() if k not in (*TORCHRUN_ENV, "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
               DROPBLOCK_DIST_TIMEOUT="60", **extra)
    return env


def sweep_args(folder: Path, code: Path, out: Path, name: str) -> list[str]:
    return ["sweep", str(folder), "--model", f"{code}:build", "--input-size", "64", "--layer", "block",
            "--keep-probs", "1,0.8", "--block-sizes", "1,3", "--methods", "dropblock,dropout", "-n", "3",
            "--csv", str(out / f"{name}.csv"), "-o", str(out / f"{name}.png"), "--json"]


def one_process(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dropblock", *args], capture_output=True, text=True, timeout=120,
                          env=clean_env(), cwd=ROOT)


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return subprocess.run([*launcher, "-m", "dropblock", *args], capture_output=True, text=True, timeout=180,
                          env=clean_env(), cwd=ROOT)


def two_ranks(args: list[str]) -> list[subprocess.Popen]:
    """``python -m dropblock ARGS`` as ranks 0 and 1 of a 2-process group, started as torchrun would start
    them (its environment variables), so that each rank's exit code and stderr can be seen."""
    port = str(free_port())
    return [subprocess.Popen([sys.executable, "-m", "dropblock", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=clean_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
            for r in (0, 1)]


def data_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Five small photos, the tiny model's file, and a one-process run's CSV and JSON."""
    base = tmp_path_factory.mktemp("dist")
    folder, out = base / "photos", base / "out"
    photos(folder, 5, size=(48, 64))
    out.mkdir()
    code = write_code(base)
    r = one_process(sweep_args(folder, code, out, "one"))
    assert r.returncode == 0, r.stderr
    return folder, code, out, json.loads(r.stdout)


def test_two_processes_write_the_one_process_csv_row_for_row(setup):
    """torchrun, 2 gloo ranks, 5 images (3 rounds, the last with one image), each rank with a decoding worker
    process: the CSV is the same text as one
    process's (same rows, same order, same settings line), the JSON's results equal, rank 0 alone prints and
    draws. Breaks if the ranks' images overlap or go missing, if rank 0 writes them out of order, if a rank's
    seeds depended on its shard, or if a follower printed its own (partial) results."""
    folder, code, out, one = setup
    r = torchrun([*sweep_args(folder, code, out, "two"), "--workers", "1"])  # each rank decodes ahead too
    assert r.returncode == 0, r.stderr
    assert (out / "two.csv").read_text() == (out / "one.csv").read_text()
    two = json.loads(r.stdout)  # one JSON object: the other rank printed nothing
    assert two["results"] == one["results"] and two["images"] == 5 and two["skipped"] == []
    assert (out / "two.png").stat().st_size > 10_000
    assert "dropblock: error" not in r.stderr and "warning" not in r.stderr.replace("UserWarning", "")


def test_two_processes_resume_what_one_process_left(setup):
    """A CSV cut in the middle of the second image (and mid-row): two ranks resume it to exactly the file of
    an uninterrupted run (one process appends the rest in the same order: the second image's remaining
    settings, then the other images). Breaks if the followers do not get rank 0's list of what is left (they
    would redo or skip settings), or if an image half done were redone whole."""
    folder, code, out, one = setup
    full = (out / "one.csv").read_text()
    lines = full.splitlines(keepends=True)
    kept = len([line for line in lines if line.startswith("#")]) + 1 + 6 + 2  # header, 1 image and 2 rows
    (out / "resume.csv").write_text("".join(lines[:kept]) + "/tmp/img0001.png,dropb")  # and half a row
    r = torchrun([*sweep_args(folder, code, out, "resume"), "--resume"])
    assert r.returncode == 0, r.stderr
    assert (out / "resume.csv").read_text() == full
    assert json.loads(r.stdout)["results"] == one["results"]


def test_images_sharing_passes_resumed_on_two_ranks_write_the_one_process_csv(setup):
    """--images-per-pass 2: images go in fixed pairs by position (3 groups of 5 images), ranks take whole
    groups, and a CSV cut inside the first pair is resumed by recomputing the pair. The file is then the same
    text as an uninterrupted one-process run's. Breaks if a rank split a pair, or if the resumed image ran
    alone (other passes, other last bits)."""
    folder, code, out, _ = setup
    r = one_process([*sweep_args(folder, code, out, "pairs"), "--images-per-pass", "2"])
    assert r.returncode == 0, r.stderr
    full = (out / "pairs.csv").read_text()
    assert '"images_per_pass": 2' in full
    lines = full.splitlines(keepends=True)
    kept = len([line for line in lines if line.startswith("#")]) + 1 + 6 + 2  # header, 1 image and 2 rows
    (out / "pairs2.csv").write_text("".join(lines[:kept]))
    r = torchrun([*sweep_args(folder, code, out, "pairs2"), "--images-per-pass", "2", "--resume"])
    assert r.returncode == 0, r.stderr
    assert (out / "pairs2.csv").read_text() == full


def test_a_failure_on_one_rank_is_one_line_and_every_rank_exits_with_its_code(tmp_path):
    """The model gives NaN on the bright image, which rank 1 gets: rank 0 prints the one line (naming rank 1),
    rank 1 prints nothing, both exit 1 well before the timeout, and the CSV keeps the image rank 0 finished
    before it, as one process would. Started as torchrun would start them, to see each rank's code and
    stderr. Breaks if rank 0 waited for a round rank 1 never sends (a hang), or rank 1 printed too."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(folder / "a_dark.png")
    Image.fromarray(np.full((48, 64, 3), 255, np.uint8)).save(folder / "b_bright.png")
    write_code(tmp_path)
    (tmp_path / "picky.py").write_text(PICKY)
    args = sweep_args(folder, tmp_path / "picky.py", tmp_path, "run")
    procs = two_ranks(args)
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [1, 1], results
    (out0, err0), (out1, err1) = results
    assert out0 == out1 == "" and err1 == ""
    lines = err0.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropblock: error: on rank 1 of 2: "), err0
    assert "NaN" in lines[0] and "Traceback" not in err0
    rows = data_lines(tmp_path / "run.csv")[1:]
    assert len(rows) == 6 and all(r.startswith(str(folder / "a_dark.png")) for r in rows)


def test_ctrl_c_during_an_exchange_waits_for_it_to_complete():
    """SIGINT in the middle of an exchange is held until the exchange is complete (the ranks stay in step),
    then raised; the handler before it is back. Breaks without the deferral (the interrupt would escape from
    inside the exchange, before the messages were seen)."""
    import signal

    completed = []

    def exchange(message, n):
        os.kill(os.getpid(), signal.SIGINT)  # without the deferral, KeyboardInterrupt is raised right here
        completed.append(message)
        return [message, ("ok", "b")]

    before = signal.getsignal(signal.SIGINT)
    ranks = Ranks(0, 2, 0, 2, exchange=exchange)
    with pytest.raises(KeyboardInterrupt):
        ranks.round("a")
    assert completed == [("ok", "a")] and not ranks.stopped and signal.getsignal(signal.SIGINT) is before

    def stopping(message, n):
        os.kill(os.getpid(), signal.SIGINT)
        return [message, ("stop", 1, "boom")]

    ranks = Ranks(0, 2, 0, 2, exchange=stopping)
    with pytest.raises(Stopped):  # the stop wins: every rank ends now anyway
        ranks.round("a")


def test_sigterm_during_an_exchange_waits_for_it_when_a_python_handler_is_set():
    """With a Python SIGTERM handler in place (the command line's raises as Ctrl-C does), SIGTERM in the
    middle of an exchange reaches it once the exchange is complete; both handlers before are back. With
    SIGTERM's default action nothing is held (the library leaves it alone). Breaks without the SIGTERM
    deferral (the handler's exception would escape from inside the exchange, between its collectives)."""
    import signal

    came, completed = [], []

    class Raised(Exception):
        pass

    def handler(signum, frame):
        came.append(completed[:])
        raise Raised

    def exchange(message, n):
        os.kill(os.getpid(), signal.SIGTERM)
        completed.append(message)
        return [message, ("ok", "b")]

    before = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Raised):
            Ranks(0, 2, 0, 2, exchange=exchange).round("a")
        assert came == [[("ok", "a")]]  # the handler ran after the exchange was complete
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (before[0], handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        during = []
        Ranks(0, 2, 0, 2, exchange=lambda m, n: during.append(signal.getsignal(signal.SIGTERM)) or [m, m]).round("a")
        assert during == [signal.SIG_DFL]  # not replaced, even for the block
    finally:
        signal.signal(signal.SIGTERM, before[1])


def test_sigterm_to_every_rank_is_one_line_from_rank_0_and_whole_rows(tmp_path):
    """SIGTERM to both ranks once the CSV holds a row, as a scheduler sends it to a torchrun job: both exit
    143, rank 0 prints the finished images' table and one line saying it was terminated and what was kept,
    rank 1 prints nothing, and the CSV holds whole images only. Breaks if a rank died by the signal (no
    line, code -15) or if rank 1 spoke. (A signal inside an exchange is rarely hit here: the test above
    holds that case.)"""
    import signal
    import time

    photos(tmp_path / "photos", 40, size=(48, 64))
    code = write_code(tmp_path)
    args = [a for a in sweep_args(tmp_path / "photos", code, tmp_path, "run") if a != "--json"]
    args[args.index("-n") + 1] = "40"
    procs = two_ranks(args)
    try:
        deadline = time.monotonic() + 90
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if (tmp_path / "run.csv").exists() and len(data_lines(tmp_path / "run.csv")) > 1:
                break
            time.sleep(0.01)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        results = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [143, 143], results
    (out0, err0), (out1, err1) = results
    assert out1 == err1 == "" and "DropBlock" in out0
    lines = err0.splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: terminated by SIGTERM after "), err0
    rows = data_lines(tmp_path / "run.csv")[1:]
    images = {r.split(",")[0] for r in rows}
    assert 0 < len(images) < 40 and len(rows) == 6 * len(images)
    assert lines[0].split()[5] == str(len(images))
