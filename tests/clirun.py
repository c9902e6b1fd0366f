"""One way to run the CLI in tests: typer's runner on the app, arguments as strings."""

from typer.testing import CliRunner

from dropblock.cli import app

_runner = CliRunner()


def run(*args):
    """Invoke ``dropblock ARGS...``; returns click's Result (exit_code, stdout, stderr)."""
    return _runner.invoke(app, [str(a) for a in args])
