"""``dropblock sweep`` on several processes and with images decoded ahead: the per-image loop's source.

:func:`image_rows` gives the sweep's loop, for every image in order, its new rows (or why it was
skipped). Images go in fixed groups (``--images-per-pass``: consecutive paths, whose edits share passes),
so that a group, and so each row to its last bit, is the same whatever the split or the resume. In one
process it decodes ahead (``--workers``, :mod:`dropblock.loader`) and computes every group with
something to do. Under ``torchrun`` (:func:`ranked` wraps the command) those groups are dealt out
across the ranks, every ``world``-th to each, and computed in rounds of one group a rank; after each
round the ranks exchange their rows (:mod:`dropblock.distributed`) and rank 0 yields them, in the
order one process would, to the loop, which writes the CSV as it always does. So rank 0's CSV, JSON
and figure equal a one-process run's row for row (an image's seeds come from its bytes and the
setting), a killed run keeps every finished round, and ``--resume`` works: rank 0 reads the CSV and
sends what is left to do to the others.

The other ranks print nothing: their stderr is held (only the last error line is kept, to send to
rank 0), their files options are cleared (only rank 0 opens the CSV), and they leave the command
after the last round without drawing or printing results. Every rank exits with the same code: a
failure anywhere is one line, printed by rank 0, and the others' next exchange stops them too.
"""

from __future__ import annotations

import functools
import io
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import typer

from dropblock.cli.options import fail

_RANKS = None
"""The :class:`~dropblock.distributed.Ranks` of the command running under torchrun, else None."""
_ERROR_PREFIX = "dropblock: error: "


class _RoundsDone(BaseException):
    """A rank other than 0 has sent its last rows: it leaves the command (rank 0 draws and prints)."""


class _HeldErrors(io.TextIOBase):
    """A rank's stderr while another rank speaks for the group: keeps only its last error line."""

    def __init__(self) -> None:
        self.last = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith(_ERROR_PREFIX):
                self.last = line[len(_ERROR_PREFIX):]
        return len(text)


def ranked(follower_options: dict) -> Callable:
    """Decorate a command so that, under torchrun, its processes run it as one group (see the module
    docstring); ``follower_options`` replace options on ranks other than 0 (the files only rank 0 opens).
    Outside torchrun the command runs as it is."""
    def wrap(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(**options):
            from dropblock.distributed import launched

            if not launched():
                return command(**options)
            return _as_group(command, options, follower_options)

        return run

    return wrap


def _uses_cuda(device: str) -> bool:
    import torch

    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def _as_group(command: Callable, options: dict, follower_options: dict):
    from contextlib import ExitStack

    from dropblock.distributed import RanksLost, joined

    with ExitStack() as stack:
        try:
            ranks = stack.enter_context(joined("cuda" if _uses_cuda(options.get("device", "cpu")) else "cpu"))
        except ValueError as e:  # a bad DROPBLOCK_DIST_TIMEOUT, or no CUDA: the same on every rank
            fail(str(e), 2)
        except RanksLost as e:
            fail(str(e), 1)
        try:
            return _as_rank(command, options if ranks.leader else {**options, **follower_options}, ranks)
        except RanksLost as e:  # every rank that notices says so: the rank that would speak may be the lost one
            who = "" if ranks.leader else f"rank {ranks.rank} of {ranks.world}: "
            kept = "; the --csv file keeps every image finished before: rerun with --resume" if ranks.leader else ""
            fail(f"{who}{e}{kept}", 1)


def _as_rank(command: Callable, options: dict, ranks):
    """The command on this rank, its stderr held unless it is rank 0."""
    global _RANKS
    held, stderr = (None, sys.stderr) if ranks.leader else (_HeldErrors(), sys.stderr)
    _RANKS = ranks
    if held is not None:
        sys.stderr = held
    try:
        return _run_in_group(command, options, ranks, held)
    finally:
        _RANKS, sys.stderr = None, stderr


def _run_in_group(command: Callable, options: dict, ranks, held: _HeldErrors | None):
    """The command, then the final exchange; raises what makes this rank exit with the code every rank
    agrees on (the first in rank order of those that stopped)."""
    from dropblock.distributed import RanksLost
    from dropblock.errors import one_line

    code, line, error = 0, "", None
    try:
        result = command(**options)
    except _RoundsDone:
        result = None
    except RanksLost:
        raise
    except typer.Exit as e:
        code, error = e.exit_code, e
        line = held.last if held is not None else ""
    except KeyboardInterrupt as e:
        code, error = 130, e
    except BaseException as e:  # noqa: BLE001 - a bug or a user's model: its line goes to rank 0
        code, line, error = 1, one_line(e, with_type=True, limit=300), e
    agreed = code if ranks.stopped else _final_exchange(ranks, code, line)
    if error is not None and ranks.leader and agreed == code:
        raise error  # rank 0's own failure, reported as one process reports it
    if agreed:
        raise typer.Exit(agreed)
    return result


def _final_exchange(ranks, code: int, line: str) -> int:
    """This rank's outcome for the others; the agreed exit code. Rank 0, having succeeded, says why
    another rank did not."""
    from dropblock.distributed import Stopped

    if code:
        stops = ranks.stop(code, line)
    else:
        try:
            ranks.round(None)
            return 0
        except Stopped as e:
            stops = e.stops
    first = stops[0]
    if ranks.leader and code == 0 and first.code != 130:
        fail(f"on rank {first.rank} of {ranks.world}: {first.line or 'it stopped'}", first.code)
    return first.code


def image_rows(paths: Sequence[Path], todo_of: Callable[[Path], dict], work: Callable, *, full: dict,
               workers: int = 0, short_side: int | None = None,
               group: int = 1) -> Iterator[tuple[Path, list, str | None]]:
    """(path, rows, skipped) for every path in order; ``skipped`` the one line why an image cannot be used, else
    None. The paths are taken in groups of ``group`` in their order (the same groups in every run of the same
    paths, however the run is split or resumed); a group with something ``todo_of`` runs as one call
    ``work(items, todos)`` on its images that load (:class:`~dropblock.loader.ImageItem`; each image's todo,
    empty for one that is done), which gives each image's rows; an image of no such group has no rows.
    ``full``: what an untouched image has to do. Under torchrun see the module docstring: rank 0 yields
    every image, the others yield none."""
    if _RANKS is None:
        jobs = _groups(paths, todo_of, group)
        items = _loaded([paths[i] for job in jobs for i in job], workers, short_side)
        done = (out for job in jobs
                for out in _work_on(job, [next(items) for _ in job], [todo_of(paths[i]) for i in job], work))
        yield from _in_order(paths, done)
        return
    if _RANKS.leader:
        yield from _in_order(paths, _rounds(_RANKS, paths, todo_of, work, full, workers, short_side, group))
        return
    try:
        for _ in _rounds(_RANKS, paths, todo_of, work, full, workers, short_side, group):
            pass
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise _RoundsDone


def _groups(paths: Sequence[Path], todo_of: Callable[[Path], dict], group: int) -> list[list[int]]:
    """The indices of ``paths`` in groups of ``group`` (by position), those with something to do."""
    chunks = [list(range(i, min(i + group, len(paths)))) for i in range(0, len(paths), group)]
    return [c for c in chunks if any(todo_of(paths[i]) for i in c)]


def _work_on(job: list[int], items: list, todos: list[dict], work: Callable) -> list[tuple[int, list, str | None]]:
    """(index, rows, skipped) of each image of a group: ``work`` on the ones that load."""
    ok = [k for k, item in enumerate(items) if item.error is None]
    rows = dict(zip(ok, work([items[k] for k in ok], [todos[k] for k in ok]))) if ok else {}
    return [(i, rows.get(k, []), items[k].error) for k, i in enumerate(job)]


def _in_order(paths: Sequence[Path], done: Iterator[tuple[int, list, str | None]]):
    """Every path in order: the computed ones from ``done`` ((index, rows, skipped), increasing index),
    the others with no rows."""
    position = 0
    for index, rows, skipped in done:
        for p in paths[position:index]:
            yield p, [], None
        yield paths[index], rows, skipped
        position = index + 1
    for p in paths[position:]:
        yield p, [], None


def _loaded(paths: list[Path], workers: int, short_side: int | None):
    from dropblock.loader import LoaderError, load_images

    try:
        yield from load_images(paths, workers=workers, short_side=short_side)
    except LoaderError as e:
        fail(f"{e}; rerun with fewer --workers, or --workers 0", 1)


def _rounds(ranks, paths: Sequence[Path], todo_of: Callable, work: Callable, full: dict, workers: int,
            short_side: int | None, group: int) -> Iterator[tuple[int, list, str | None]]:
    """This rank's groups of images, one a round; on rank 0, every rank's (index, rows, skipped), in index order."""
    from dropblock.distributed import Stopped

    first = None
    if ranks.leader:
        jobs = _groups(paths, todo_of, group)
        first = ([str(p) for p in paths], jobs, {i: t for job in jobs for i in job if (t := todo_of(paths[i])) != full})
    try:
        names, jobs, partial = ranks.round(first)[0]
        paths = paths if ranks.leader else [Path(n) for n in names]
        mine = ranks.shard(jobs)
        items = _loaded([paths[i] for job in mine for i in job], workers, short_side)
        for r in range(math.ceil(len(jobs) / ranks.world)):  # every rank makes as many exchanges
            out = None
            if r < len(mine):
                job = mine[r]
                out = _work_on(job, [next(items) for _ in job], [partial.get(i, full) for i in job], work)
            yield from (o for outs in ranks.round(out) if outs is not None for o in outs)
    except Stopped as e:
        if ranks.leader:  # the rows of the ranks before the one that stopped, as one process would have them
            yield from (o for k in range(e.stops[0].rank) if e.payloads.get(k) is not None for o in e.payloads[k])
        _stopped(ranks, e)


def _stopped(ranks, e) -> None:
    """Another rank stopped: rank 0 says why (an interruption ends the loop as Ctrl-C does); all exit."""
    stop = e.stops[0]
    if not ranks.leader:
        raise typer.Exit(e.code)
    if stop.code == 130:
        raise KeyboardInterrupt
    fail(f"on rank {stop.rank} of {ranks.world}: {stop.line or 'it stopped'}", stop.code)
