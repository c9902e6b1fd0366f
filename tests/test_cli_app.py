"""The CLI as a whole: --help and completion stay light, the installed console script, help texts."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clirun import run


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
