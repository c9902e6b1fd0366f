"""The Typer app and its error handling: every failure is one line on stderr, exit 2 for usage, 1 for failures."""

from __future__ import annotations

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
        try:
            rv = super().main(args=args, prog_name=prog_name or "dropblock", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except NoArgsIsHelpError:  # typer has printed the help already
            code = 0
        except ClickException as e:
            error_line(f"{e.format_message()} (see --help)")
            code = e.exit_code
        except DropblockError as e:  # our own typed errors: usage 2, failure 1
            error_line(str(e))
            code = exit_code(e)
        except SystemExit as e:  # our commands exit through click; this came from code we ran (a user's model)
            error_line(f"code run for this command called sys.exit({e.code!r}); the command stopped there")
            code = 1
        except (Abort, KeyboardInterrupt):
            error_line("aborted")
            code = 130
        except Exception as e:  # a bug: say so in one line, traceback on request
            if os.environ.get("DROPBLOCK_DEBUG"):
                raise
            from dropblock.errors import one_line

            error_line(f"internal error: {one_line(e, with_type=True)} (set DROPBLOCK_DEBUG=1 for the traceback)")
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


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
