"""The sweep's per-image rows as CSV: written and flushed image by image, read back to resume.

Columns (:data:`CSV_COLUMNS`): ``image,method,block_size,keep_prob,masks,drop_rate,kl,agreement,accuracy``.
``block_size`` is empty but for DropBlock and ``accuracy`` empty without a label; floats are written
with Python's ``repr`` (the shortest text that reads back as the same float), so a resumed run
holds exactly the values an uninterrupted one would. A row is keyed by (image, method, block_size,
keep_prob), where ``image`` is the path as found from the run's arguments: resume from the same
directory with the same arguments, and the same model, layer, ``-n``, ``--gamma`` and ``--seed``
(only ``masks`` is recorded, and checked).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from dropblock.sweep import ImageRow, Setting

__all__ = ["CSV_COLUMNS", "SweepCsvError", "read_rows", "SweepCsv"]

CSV_COLUMNS = ("image", "method", "block_size", "keep_prob", "masks", "drop_rate", "kl", "agreement", "accuracy")


class SweepCsvError(ValueError):
    """A sweep CSV that cannot be resumed; ``str(err)`` is one line that names the file and line."""


def _format(row: ImageRow) -> list[str]:
    s = row.setting
    return [row.image, s.method, "" if s.block_size is None else str(s.block_size), repr(float(s.keep_prob)),
            str(row.masks), repr(row.drop_rate), repr(row.kl), repr(row.agreement),
            "" if row.accuracy is None else repr(row.accuracy)]


def _parse(cells: list[str]) -> ImageRow:
    """One CSV row; raises ValueError (or KeyError) on a bad cell."""
    image, method, block, keep_prob, masks, drop_rate, kl, agreement, accuracy = cells
    setting = Setting(method, int(block) if block else None, float(keep_prob))
    return ImageRow(image, setting, int(masks), float(drop_rate), float(kl), float(agreement),
                    float(accuracy) if accuracy else None)


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline (a row cut short by a killed run is left out)."""
    text = path.read_text(encoding="utf-8")
    return text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]


def read_rows(path: str | os.PathLike[str]) -> list[ImageRow]:
    """The rows of a sweep CSV (empty for an empty file).

    Raises:
        SweepCsvError: another header, or a row that does not parse (the message names the line).
        OSError: the file cannot be read.
    """
    path = Path(path)
    try:
        lines = list(csv.reader(io.StringIO(_complete_text(path))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise SweepCsvError(f"{str(path)!r} is not a sweep CSV ({e})") from None
    if not lines:
        return []
    if tuple(lines[0]) != CSV_COLUMNS:
        raise SweepCsvError(f"{str(path)!r} is not a sweep CSV: its header is not {','.join(CSV_COLUMNS)}")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        try:
            if len(cells) != len(CSV_COLUMNS):
                raise ValueError(f"{len(cells)} columns")
            rows.append(_parse(cells))
        except (ValueError, KeyError) as e:
            raise SweepCsvError(f"{str(path)!r} line {number} is not a sweep row ({e})") from None
    return rows


class SweepCsv:
    """An append-only sweep CSV. ``SweepCsv(path, resume=False)`` will start a new file (the caller
    makes sure it may be overwritten); ``resume=True`` reads what a previous run wrote into
    ``previous`` and will append. The file is opened at the first :meth:`write`, so a run that
    finishes nothing leaves no file behind. Use as a context manager.

    Raises (on creation):
        SweepCsvError, OSError: as :func:`read_rows`.
    """

    def __init__(self, path: str | os.PathLike[str], *, resume: bool) -> None:
        self.path = Path(path)
        self.resume = resume and self.path.exists()
        self.previous: list[ImageRow] = read_rows(self.path) if self.resume else []
        self._fh = None

    def done(self) -> set[tuple[str, Setting]]:
        """The (image, setting) pairs the previous run finished."""
        return {(row.image, row.setting) for row in self.previous}

    def _open(self) -> None:
        fresh = True
        if self.resume:
            text = _complete_text(self.path)
            if text != self.path.read_text(encoding="utf-8"):  # drop a row cut short by a killed run
                self.path.write_text(text, encoding="utf-8")
            fresh = not text
        self._fh = open(self.path, "a" if self.resume else "w", newline="", encoding="utf-8")
        if fresh:
            self._write_lines([list(CSV_COLUMNS)])

    def _write_lines(self, lines: list[list[str]]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(lines)
        self._fh.write(buffer.getvalue())  # one write: rows are on disk whole or not at all
        self._fh.flush()

    def write(self, rows: list[ImageRow]) -> None:
        """Append ``rows`` and flush them to the file (opened, with its header, on the first call).
        Raises OSError when the file cannot be written."""
        if self._fh is None:
            self._open()
        self._write_lines([_format(row) for row in rows])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> SweepCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
