"""The Typer app and its error handling: every failure is one line on stderr, exit 2 for usage, 1 for failures.

Ctrl-C and SIGTERM (what job schedulers and torchrun send before they kill) end a command the same way:
one line saying what was kept, exit 130 for Ctrl-C and 143 (128 + 15) for SIGTERM. While a command runs
in the main thread, SIGTERM raises :class:`Terminated`, a KeyboardInterrupt, so every ``except
KeyboardInterrupt`` that says what was kept says it for SIGTERM too; the handler before it is back when the
command ends. The library never touches the calling process's signal handlers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator

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
    """Print ``dropblock: error: MESSAGE`` on stderr. The command is ending with this line: a SIGTERM from
    now on changes nothing (see :func:`_sigterm_raises`)."""
    _sigterm["armed"] = False
    print(f"dropblock: error: {message}", file=sys.stderr)


INTERRUPTED, TERMINATED = 130, 128 + signal.SIGTERM
"""Exit statuses after Ctrl-C and after SIGTERM (the shell's 128 + signal number)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM came while a command ran: it ends the command by the road Ctrl-C takes (exit 143)."""


_sigterm: dict = {"armed": False, "came": False, "pid": None, "previous": None}
"""The SIGTERM handler's state for the running command: ``armed`` (the next SIGTERM raises), ``came`` (one
did), the ``pid`` that installed it and the ``previous`` handler."""


def stopped_word() -> str:
    """How the running command was stopped, for its messages: 'terminated by SIGTERM' or 'interrupted'."""
    return "terminated by SIGTERM" if _sigterm["came"] else "interrupted"


def _on_sigterm(signum: int, frame) -> None:
    if os.getpid() != _sigterm["pid"]:  # a forked child (of user code): what it would do without us
        signal.signal(signum, _sigterm["previous"])
        signal.raise_signal(signum)
        return
    if _sigterm["armed"]:  # only the first; later ones (SLURM signals torchrun and its ranks) are no news
        _sigterm.update(armed=False, came=True)
        raise Terminated
    # the command is ending already, with its own line: it goes on ending


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` once while the block runs; the previous handler is restored
    exactly. Outside the main thread (signal.signal raises there), or when the handler in place was not
    set from Python (it could not be put back), nothing changes."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    _sigterm.update(armed=True, came=False, pid=os.getpid(), previous=previous)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _sigterm.update(armed=False, pid=None, previous=None)


class _Stopped(Exception):
    """A KeyboardInterrupt (Ctrl-C, or :class:`Terminated`) that ended a command, carried past typer (which
    would turn it into a silent exit 130) to :func:`_failure`; ``interrupt`` is the original."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__()
        self.interrupt = interrupt


def _rank_quiet() -> bool:
    """A process of a torchrun group other than rank 0: rank 0 says how the group stopped."""
    from dropblock.distributed import launched

    return launched() and os.environ.get("RANK") != "0"


class _Group(TyperGroup):
    """Turns click's multi-line usage errors (and any stray exception) into one line on stderr."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # noqa: D102
        if sys.stdout is None:  # started with stdout closed (``>&-``)
            error_line("stdout is closed, so the results have nowhere to go; redirect it to a file or /dev/null")
            code = 2
        else:
            with _sigterm_raises():
                code = self._run(args, prog_name, complete_var, standalone_mode, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args, prog_name, complete_var, standalone_mode: bool, extra: dict) -> int:
        """The command; its exit code (each kind of failure printed as one line)."""
        try:
            rv = super().main(args=args, prog_name=prog_name or "dropblock", complete_var=complete_var,
                              standalone_mode=False, **extra)
            _sigterm["armed"] = False  # done: what remains is leaving
            sys.stdout.flush()  # a full disk or a closed pipe shows here, not at exit
            code = rv if isinstance(rv, int) else 0
            return TERMINATED if code == INTERRUPTED and _sigterm["came"] else code
        except NoArgsIsHelpError:  # typer has printed the help already
            return 0
        except BaseException as e:  # noqa: BLE001 - each kind gets its one line below
            _sigterm["armed"] = False
            e = e.interrupt if isinstance(e, _Stopped) else e
            if os.environ.get("DROPBLOCK_DEBUG") and _is_bug(e):
                raise
            message, code = _failure(e)
            if not (isinstance(e, KeyboardInterrupt) and _rank_quiet()):
                error_line(message)
            if standalone_mode and _is_stdout_error(e):  # what is still buffered goes nowhere, quietly
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return code

    def invoke(self, ctx):  # noqa: D102 - the command itself: a KeyboardInterrupt is carried past typer
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise _Stopped(e) from None


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
    if isinstance(e, Terminated):
        return "terminated by SIGTERM; files already written are kept, nothing is half-written", TERMINATED
    if isinstance(e, (Abort, KeyboardInterrupt)):
        return "interrupted; files already written are kept, nothing is half-written", INTERRUPTED
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
