"""The Typer app and its error handling: every failure is one line on stderr, exit 2 for usage, 1 for failures."""

from __future__ import annotations

import errno
import os
import sys

import typer
from typer.core import TyperGroup

from dropblock.errors import DropblockError, UsageError

try:  # typer vendors click from 0.2x on
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort
except ImportError:  # pragma: no cover - typer on top of click
    from click.exceptions import Abort, ClickException, NoArgsIsHelpError

HELP = "See what DropBlock, dropout and Cutout do to an image or a CNN's feature maps, and audit the DropBlock gamma math."


def exit_code(error: BaseException) -> int:
    """2 for a usage error (:class:`~dropblock.errors.UsageError`: what was typed is wrong), 1 for
    anything else."""
    return 2 if isinstance(error, UsageError) else 1


def error_line(message: str) -> None:
    """Print ``dropblock: error: MESSAGE`` on stderr."""
    print(f"dropblock: error: {message}", file=sys.stderr)


class _Group(TyperGroup):
    """Turns click's multi-line usage errors (and any stray exception) into one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: D102
        if sys.stdout is None:  # started with stdout closed (``>&-``)
            error_line("stdout is closed, so the results have nowhere to go; redirect it to a file or /dev/null")
            code = 2
        else:
            try:
                rv = super().main(args=args, prog_name=prog_name or "dropblock", complete_var=complete_var,
                                  standalone_mode=False, **extra)
                sys.stdout.flush()  # a full disk or a closed pipe shows here, not at exit
                code = rv if isinstance(rv, int) else 0
            except NoArgsIsHelpError:  # typer has printed the help already
                code = 0
            except BaseException as e:  # noqa: BLE001 - each kind gets its one line below
                if os.environ.get("DROPBLOCK_DEBUG") and _is_bug(e):
                    raise
                message, code = _failure(e)
                error_line(message)
                if standalone_mode and _is_stdout_error(e):  # what is still buffered goes nowhere, quietly
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if standalone_mode:
            sys.exit(code)
        return code


_WRITE_ERRORS = (errno.EPIPE, errno.ENOSPC, errno.EBADF, errno.EIO, errno.EDQUOT)


def _is_stdout_error(e: BaseException) -> bool:
    """A write that failed (full disk, closed pipe); click turns a broken pipe into sys.exit(1)."""
    if isinstance(e, SystemExit) and isinstance(e.__context__, OSError):
        e = e.__context__
    return isinstance(e, OSError) and e.errno in _WRITE_ERRORS


def _is_bug(e: BaseException) -> bool:
    """Neither a usage error, a failure we name, an interruption nor an exit: our bug."""
    known = (ClickException, DropblockError, SystemExit, Abort, KeyboardInterrupt)
    return not isinstance(e, known) and not _is_stdout_error(e)


def _failure(e: BaseException) -> tuple[str, int]:
    """The one line and the exit code for an exception that ended a command."""
    if isinstance(e, ClickException):
        return f"{e.format_message()} (see --help)", e.exit_code
    if isinstance(e, DropblockError):  # our own typed errors: usage 2, failure 1
        return str(e), exit_code(e)
    if _is_stdout_error(e):
        e = e.__context__ if isinstance(e, SystemExit) else e
        return f"cannot write the results: {e.strerror or e}", 1
    if isinstance(e, SystemExit):  # our commands exit through click: this came from code we ran (a user's model)
        return f"code run for this command called sys.exit({e.code!r}); the command stopped there", 1
    if isinstance(e, (Abort, KeyboardInterrupt)):
        return "interrupted; files already written are kept, nothing is half-written", 130
    from dropblock.errors import one_line

    return f"internal error: {one_line(e, with_type=True)} (set DROPBLOCK_DEBUG=1 for the traceback)", 1


app = typer.Typer(
    cls=_Group,
    name="dropblock",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from dropblock import __version__

        print(f"dropblock {__version__}")
        raise typer.Exit(0)


@app.callback(help=HELP)
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass
