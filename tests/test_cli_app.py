"""The CLI as a whole: --help and completion stay light, the installed console script, help texts, one-line
errors and their exit codes, Ctrl-C and SIGTERM."""

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clirun import run
from conftest import ROOT


HEAVY = ("torch", "matplotlib", "numpy", "PIL")


@pytest.mark.parametrize("argv", [["--help"], ["gamma", "--help"], ["show", "--help"], ["compare", "--help"],
                                  ["schedule", "--help"], ["layers", "--help"], []])
def test_help_imports_neither_torch_nor_matplotlib(argv):
    code = (
        "import sys\n"
        "from dropblock.cli import app\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(app, {argv!r})\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_shell_completion_imports_neither_torch_nor_matplotlib():
    code = (
        "import os, sys\n"
        "os.environ.update({'_DROPBLOCK_COMPLETE': 'complete_bash', 'COMP_WORDS': 'dropblock gam', 'COMP_CWORD': '1'})\n"
        "from dropblock.cli import app\n"
        "try:\n    app(prog_name='dropblock')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "gamma" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_installed_console_script():
    exe = shutil.which("dropblock", path=str(Path(sys.executable).parent)) or shutil.which("dropblock")
    if exe is None:
        pytest.skip("the console script is not installed (pip install -e .)")
    out = subprocess.run([exe, "gamma", "--samples", "1000", "--json"], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["samples"] == 1000
    bad = subprocess.run([exe, "gamma", "--block-size", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_help_shows_units_and_defaults_written_in_brackets():
    r = run("show", "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.replace("│", " ").split())
    assert "in pixels of the input image [default: 1/8 of its shorter side]" in text
    assert "[default: 150; 110 with --layer" in text


def test_typed_errors_choose_the_exit_code(monkeypatch):
    """Our UsageError exits 2, our Failure 1, and any other exception (a ValueError raised inside torch, say)
    is an internal error with exit 1, never a usage error (breaks if exit codes were chosen by
    isinstance(error, ValueError))."""
    import typer
    from typer.testing import CliRunner

    from dropblock.cli.app import _Group
    from dropblock.errors import Failure, UsageError

    raised = {"usage": UsageError("--x must be > 0, got -1"), "failure": Failure("the model failed"),
              "torch": ValueError("Expected 4D input")}
    app = typer.Typer(cls=_Group)

    @app.command()
    def boom(kind: str) -> None:
        raise raised[kind]

    @app.command()
    def other() -> None:  # two commands, so that the command name is an argument
        pass

    monkeypatch.delenv("DROPBLOCK_DEBUG", raising=False)
    runner = CliRunner()
    for kind, code, text in (("usage", 2, "dropblock: error: --x must be > 0, got -1"),
                             ("failure", 1, "dropblock: error: the model failed"),
                             ("torch", 1, "dropblock: error: internal error: ValueError: Expected 4D input")):
        r = runner.invoke(app, ["boom", kind])
        assert r.exit_code == code and r.stderr.strip().splitlines()[0].startswith(text), (kind, r.output)
        assert len(r.stderr.strip().splitlines()) == 1
    from dropblock.cli.app import exit_code
    from dropblock.models import LayerError, ModelLoadError

    assert [exit_code(e) for e in (ValueError("inside torch"), LayerError("x"), ModelLoadError("y"))] == [1, 2, 1]


def test_stdout_closed_or_full_is_one_line():
    """Results that cannot be printed: stdout closed at start (exit 2, before any work) or on a full disk
    (exit 1), each one line and no traceback (both were 'internal error' before)."""
    script = str(Path(sys.executable).parent / "dropblock")
    args = [script, "gamma", "-f", "14", "-b", "7", "--keep-prob", "0.9"]
    closed = subprocess.run(args, stdout=None, stderr=subprocess.PIPE, text=True, close_fds=True,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2 and closed.stderr.strip() == (
        "dropblock: error: stdout is closed, so the results have nowhere to go; redirect it to a file or /dev/null")
    with open("/dev/full", "w") as full:
        r = subprocess.run(args + ["--json"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "dropblock: error: cannot write the results: No space left on device"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_python_dash_m_runs_the_command_line():
    """``python -m dropblock`` is the command line (torchrun starts it so); breaks without __main__.py."""
    r = subprocess.run([sys.executable, "-m", "dropblock", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("dropblock "), r.stderr


@pytest.fixture
def sigterm_fails_the_test():
    """SIGTERM outside our handler fails the test (instead of ending pytest); the handler before is put back."""
    def outside(signum, frame):
        raise AssertionError("SIGTERM reached the handler in place before the command")

    previous = signal.signal(signal.SIGTERM, outside)
    yield outside
    signal.signal(signal.SIGTERM, previous)


def _app(command):
    """A two-command app on our _Group: ``boom`` runs ``command``."""
    import typer

    from dropblock.cli.app import _Group

    app = typer.Typer(cls=_Group)
    app.command("boom")(command)
    app.command("other")(lambda: None)  # two commands, so that the command name is an argument
    return app


def test_sigterm_ends_any_command_as_ctrl_c_does_with_one_line(monkeypatch, sigterm_fails_the_test):
    """SIGTERM in a command: exit 143 and one line saying it was terminated; Ctrl-C: 130 and its line (both
    were a silent 130 or a death by signal before). Breaks without the handler, or if a KeyboardInterrupt
    went on to typer (which turns it into a silent exit 130)."""
    from typer.testing import CliRunner

    def boom(kind: str) -> None:
        if kind == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # never reached with the handler; without it the process is gone

    monkeypatch.delenv("DROPBLOCK_DEBUG", raising=False)
    for kind, code, word in (("ctrl-c", 130, "interrupted"), ("sigterm", 143, "terminated by SIGTERM")):
        r = CliRunner().invoke(_app(boom), ["boom", kind])
        assert r.exit_code == code, (kind, r.output)
        assert r.stderr.splitlines() == [f"dropblock: error: {word}; files already written are kept, nothing is "
                                         "half-written"], r.stderr


def test_the_sigterm_handler_before_a_command_is_back_after_it(monkeypatch, sigterm_fails_the_test):
    """The handler in place before a command is the very same object after it, whether the command
    succeeded, was terminated or failed; inside, another one raises. From a thread other than the main one
    nothing is installed (signal.signal would raise there). Breaks if the handler were left installed (a
    library user's SIGTERM would raise KeyboardInterrupt later) or not put back exactly."""
    import typer
    from typer.testing import CliRunner

    before, seen = sigterm_fails_the_test, []

    def boom(kind: str) -> None:
        seen.append(signal.getsignal(signal.SIGTERM))
        if kind == "term":
            os.kill(os.getpid(), signal.SIGTERM)
        if kind == "fail":
            raise typer.Exit(1)

    monkeypatch.delenv("DROPBLOCK_DEBUG", raising=False)
    app = _app(boom)
    for kind, code in (("ok", 0), ("term", 143), ("fail", 1)):
        r = CliRunner().invoke(app, ["boom", kind])
        assert r.exit_code == code, r.output
        assert signal.getsignal(signal.SIGTERM) is before
    assert len(seen) == 3 and all(h is not before and callable(h) for h in seen)
    results = []
    thread = threading.Thread(target=lambda: results.append(CliRunner().invoke(app, ["boom", "ok"])))
    thread.start()
    thread.join()
    assert results[0].exit_code == 0, results[0].output
    assert seen[-1] is before and signal.getsignal(signal.SIGTERM) is before


def test_a_later_sigterm_changes_nothing_once_the_command_is_ending(monkeypatch, sigterm_fails_the_test):
    """A second SIGTERM (SLURM signals torchrun and its ranks, and torchrun passes it on) and one after the
    command printed its error line are ignored: one line, the first outcome's code, no traceback. Breaks if
    the handler raised every time (a second line, or a traceback from inside the first one's handling)."""
    import typer
    from typer.testing import CliRunner

    from dropblock.cli.options import fail

    def boom(kind: str) -> None:
        if kind == "twice":
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGTERM)  # while the first is being handled
                raise typer.Exit(130)  # what the sweep does after saying what it kept
        fail("the model failed", 1)

    monkeypatch.delenv("DROPBLOCK_DEBUG", raising=False)
    app = _app(boom)
    r = CliRunner().invoke(app, ["boom", "twice"])
    assert r.exit_code == 143 and r.stderr == "", r.output

    def failing(kind: str) -> None:
        try:
            fail("the model failed", 1)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # torchrun stopping the ranks after one failed

    r = CliRunner().invoke(_app(failing), ["boom", "x"])
    assert r.exit_code == 1 and r.stderr == "dropblock: error: the model failed\n", r.output


def test_a_rank_other_than_0_terminated_says_nothing(monkeypatch, sigterm_fails_the_test):
    """Under torchrun, rank 0 speaks for the group: a SIGTERM that ends rank 1 outside the group's own
    handling (while it leaves, say) gives exit 143 and no line on rank 1. Breaks without the rank check."""
    from typer.testing import CliRunner

    def boom() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.delenv("DROPBLOCK_DEBUG", raising=False)
    for rank, lines in (("1", 0), ("0", 1)):
        for name, value in (("RANK", rank), ("WORLD_SIZE", "2"), ("LOCAL_RANK", rank), ("MASTER_ADDR", "127.0.0.1"),
                            ("MASTER_PORT", "1")):
            monkeypatch.setenv(name, value)
        r = CliRunner().invoke(_app(boom), ["boom"])
        assert r.exit_code == 143 and len(r.stderr.splitlines()) == lines, (rank, r.output)


def _data_rows(path: Path) -> list[list[str]]:
    """The CSV's rows after its '#' settings lines and column header (the documented way to read it)."""
    with open(path, newline="") as fh:
        return list(csv.reader(itertools.dropwhile(lambda line: line.startswith("#"), fh)))[1:]


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_ends_a_sweep_with_one_line_whole_rows_and_resume_finishes(tmp_path, workers):
    """A real ``python -m dropblock sweep`` (60 small images, the tiny model: a few seconds) gets SIGTERM once
    its CSV holds a row, as a job scheduler would send: exit 143, the table of the finished images, one
    line on stderr saying it was terminated and what was kept (no traceback), a CSV of whole images only;
    ``--resume`` then finishes it to the rows of every image. With ``--workers 2`` the signal goes to the
    whole process group, as SLURM sends it: the decoding workers get it too. Breaks without the SIGTERM
    handler (death by signal: no line, code -15), with the sweep's message still saying 'interrupted', or
    with workers that die by the signal (torch then reports a killed worker beside, or instead of, our line)."""
    from test_loader import photos
    from usercode import write_code

    photos(tmp_path / "photos", 60, size=(48, 64))
    code = write_code(tmp_path)
    args = [sys.executable, "-m", "dropblock", "sweep", "photos", "--model", f"{code}:build", "--input-size", "64",
            "--layer", "block", "--keep-probs", "1,0.8", "--block-sizes", "1,3", "--methods", "dropblock,dropout",
            "-n", "40", "-o", "s.png", "--csv", "s.csv", "--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if (tmp_path / "s.csv").exists() and _data_rows(tmp_path / "s.csv"):
                break
            time.sleep(0.01)
        if workers:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    assert stderr.splitlines() == [f"note: terminated by SIGTERM after {stderr.split()[5]} of 60 images; 's.csv' "
                                   "holds every finished image: add --resume to finish"], stderr
    assert "DropBlock" in stdout and not (tmp_path / "s.png").exists()
    rows = _data_rows(tmp_path / "s.csv")
    images = {r[0] for r in rows}
    assert 0 < len(images) < 60 and len(rows) == 6 * len(images) and all(len(r) == 10 for r in rows)
    assert str(len(images)) == stderr.split()[5]
    r = subprocess.run([*args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    rows = _data_rows(tmp_path / "s.csv")
    assert len(rows) == 6 * 60 and len({tuple(r[:5]) for r in rows}) == 6 * 60
