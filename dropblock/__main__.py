"""``python -m dropblock``: the command line (what ``torchrun -m dropblock`` starts in each process)."""

from dropblock.cli import main

main()
