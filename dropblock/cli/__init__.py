"""The ``dropblock`` command line: the only part of the package that prints.

Thin: each command parses and checks its options, calls the library (and :mod:`dropblock.viz` for
figures), and prints a table or JSON. One module per command family:

* :mod:`~dropblock.cli.images`: ``show``, ``compare``, ``schedule`` on an image;
* :mod:`~dropblock.cli.layers`: ``layers`` and the ``--layer`` runs of show and compare;
* :mod:`~dropblock.cli.gamma`: ``gamma``;
* :mod:`~dropblock.cli.sweep`: ``sweep`` (regularizers at inference across images);
* :mod:`~dropblock.cli.options` (shared options and checks), :mod:`~dropblock.cli.report` (tables,
  JSON), :mod:`~dropblock.cli.app` (the app and its one-line errors).

torch and matplotlib are imported inside the commands that need them, so ``--help`` and shell
completion stay instant. Errors are one line on stderr: exit 2 for usage, 1 for failures.
"""

from __future__ import annotations

from dropblock.cli.app import app
from dropblock.cli.gamma import gamma
from dropblock.cli.images import compare, schedule, show
from dropblock.cli.layers import layers
from dropblock.cli.report import results_only_on_stdout
from dropblock.cli.sweep import sweep

for _command in (gamma, show, compare, schedule, layers, sweep):
    app.command()(results_only_on_stdout(_command))

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
