"""The sweep's per-image rows as CSV: written image by image, read back to resume, and never mixed
with rows of other settings.

Layout::

    # dropblock sweep CSV: the '#' lines above the column header are the settings that made it
    # settings: {"block_sizes": [1, 3], "gamma": "paper", "layers": ["blocks.8", "head"], ...}
    image,layer,method,block_size,keep_prob,masks,drop_rate,kl,agreement,accuracy
    photos/a.jpg,blocks.8,dropblock,3,0.9,16,0.1015625,0.0123...,0.9375,

The settings line is one JSON object (:data:`SETTINGS_KEYS` and more); ``--resume`` refuses a file
whose settings differ from the run's. Readers skip the ``#`` lines: pandas with
``pd.read_csv(path, comment="#")`` (a row with ``#`` in a cell is written quoted, which pandas' default
C engine respects; checked with pandas 3.1), Python's csv module with
``csv.DictReader(itertools.dropwhile(lambda line: line.startswith("#"), fh))``.

Columns (:data:`CSV_COLUMNS`): ``block_size`` is empty but for the block methods and ``accuracy`` empty
without a label; floats are written with Python's ``repr`` (the shortest text that reads back as the
same float), so a resumed run holds exactly the values an uninterrupted one would. A row is keyed by
(image, layer, method, block_size, keep_prob), where ``image`` is the path as found from the run's
arguments: resume from the same directory with the same arguments.

Files: a new CSV is created with ``O_EXCL`` (two runs cannot both start one) and locked while a run
appends to it (a second run on it is refused); a row cut short by a killed run is removed by
writing the complete text to a temporary file and ``os.replace`` (:mod:`dropblock.files`), never in
place; a failed append (a full disk) is cut back, so the file holds whole images only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

from dropblock.files import create_exclusive, lock, open_regular, write_all, write_atomic
from dropblock.sweep import ImageRow, Setting

__all__ = ["CSV_COLUMNS", "SETTINGS_KEYS", "SweepCsvError", "SettingsMismatch", "read_csv", "read_rows", "SweepCsv",
           "weights_digest", "labels_digest"]

CSV_COLUMNS = ("image", "layer", "method", "block_size", "keep_prob", "masks", "drop_rate", "kl", "agreement", "accuracy")
SETTINGS_KEYS = ("version", "model", "weights_sha256", "weights", "preprocessing", "layers", "device", "seed", "gamma",
                 "methods", "block_sizes", "keep_probs", "masks", "labels", "images_per_pass")
"""What a run's settings hold (the CLI fills them); every key but :data:`INFO_KEYS` must match to resume."""
INFO_KEYS = frozenset({"weights"})
"""Settings recorded but not compared: where the weights came from (a moved file is the same weights)."""
_TITLE = "# dropblock sweep CSV: the '#' lines above the column header are the settings that made it\n"
_SETTINGS = "# settings: "


class SweepCsvError(ValueError):
    """A sweep CSV that cannot be used; ``str(err)`` is one line that names the file (and line)."""


class SettingsMismatch(SweepCsvError):
    """A CSV made with other settings: ``key``, the file's value ``old`` and the run's ``new``."""

    def __init__(self, path: Path, key: str, old, new) -> None:
        self.key, self.old, self.new = key, old, new
        super().__init__(f"{str(path)!r} was made with {key} {_show(old)}, this run has {_show(new)}")


def _show(value) -> str:
    return "none" if value is None else json.dumps(value) if not isinstance(value, str) else repr(value)


def weights_digest(module) -> str:
    """SHA-256 (hex) of a torch module's state dict: names, dtypes, shapes and bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def labels_digest(labels: dict[str, int] | None) -> str | None:
    """SHA-256 (hex) of the {image: class index} a labels file gave (None without labels)."""
    if labels is None:
        return None
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()


def _quoted(cells: list[str]) -> str:
    """One CSV line; a row with ``#`` in a cell is quoted whole, so no reader takes it for a comment."""
    buffer = io.StringIO()
    quoting = csv.QUOTE_ALL if any("#" in c for c in cells) else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator="\n", quoting=quoting).writerow(cells)
    return buffer.getvalue()


def _format(row: ImageRow) -> list[str]:
    s = row.setting
    return [row.image, row.layer, s.method, "" if s.block_size is None else str(s.block_size), repr(float(s.keep_prob)),
            str(row.masks), repr(row.drop_rate), repr(row.kl), repr(row.agreement),
            "" if row.accuracy is None else repr(row.accuracy)]


def _parse(cells: list[str]) -> ImageRow:
    """One CSV row; raises ValueError (or KeyError) on a bad cell."""
    image, layer, method, block, keep_prob, masks, drop_rate, kl, agreement, accuracy = cells
    setting = Setting(method, int(block) if block else None, float(keep_prob))
    return ImageRow(image, layer, setting, int(masks), float(drop_rate), float(kl), float(agreement),
                    float(accuracy) if accuracy else None)


def header_text(settings: dict) -> str:
    """The '#' lines and the column header that start a CSV of ``settings``."""
    return _TITLE + _SETTINGS + json.dumps(settings, sort_keys=True) + "\n" + ",".join(CSV_COLUMNS) + "\n"


def _complete(text: str) -> str:
    """``text`` up to its last newline (a row cut short by a killed run is left out)."""
    return text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]


def _split_header(path: Path, text: str) -> tuple[dict | None, str]:
    """(settings or None, the text from the column header on)."""
    settings, start = None, 0
    while text.startswith("#", start):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        line = text[start:end].rstrip("\n")
        if line.startswith(_SETTINGS):
            try:
                settings = json.loads(line[len(_SETTINGS):])
            except ValueError:
                raise SweepCsvError(f"{str(path)!r}: its settings line is not JSON") from None
        start = end
    return settings, text[start:]


def parse_csv(path: Path, text: str) -> tuple[dict | None, list[ImageRow]]:
    """(settings, rows) of a sweep CSV's complete text. Raises SweepCsvError."""
    settings, body = _split_header(path, text)
    skipped = text[: len(text) - len(body)].count("\n")
    try:
        lines = list(csv.reader(io.StringIO(body)))
    except csv.Error as e:
        raise SweepCsvError(f"{str(path)!r} is not a sweep CSV ({e})") from None
    if not lines:
        return settings, []
    if tuple(lines[0]) != CSV_COLUMNS:
        raise SweepCsvError(f"{str(path)!r} is not a sweep CSV: its header is not {','.join(CSV_COLUMNS)}")
    rows = []
    for number, cells in enumerate(lines[1:], start=skipped + 2):
        try:
            if len(cells) != len(CSV_COLUMNS):
                raise ValueError(f"{len(cells)} columns")
            rows.append(_parse(cells))
        except (ValueError, KeyError) as e:
            raise SweepCsvError(f"{str(path)!r} line {number} is not a sweep row ({e})") from None
    return settings, rows


def _read_fd(fd: int, path: Path) -> str:
    data = b""
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        data += chunk
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SweepCsvError(f"{str(path)!r} is not a sweep CSV ({e})") from None


def read_csv(path: str | os.PathLike[str]) -> tuple[dict | None, list[ImageRow]]:
    """(settings, rows) of a sweep CSV (settings None when it has no settings line; a row cut short
    at the end is left out). Raises SweepCsvError, OSError (FileSafetyError for a FIFO or device)."""
    path = Path(path)
    fd = open_regular(path)
    try:
        return parse_csv(path, _complete(_read_fd(fd, path)))
    finally:
        os.close(fd)


def read_rows(path: str | os.PathLike[str]) -> list[ImageRow]:
    """The rows of a sweep CSV (see :func:`read_csv`)."""
    return read_csv(path)[1]


def check_settings(path: Path, old: dict | None, new: dict) -> None:
    """Raise SettingsMismatch on the first key (in :data:`SETTINGS_KEYS` order) where they differ."""
    new = json.loads(json.dumps(new))  # as the file would hold it (tuples as lists)
    if old is None:
        raise SweepCsvError(f"{str(path)!r} records no settings (an older dropblock wrote it), so its rows "
                            "cannot be trusted to match this run")
    keys = [k for k in dict.fromkeys([*SETTINGS_KEYS, *sorted(old), *sorted(new)]) if k not in INFO_KEYS]
    for key in keys:
        if old.get(key) != new.get(key):
            raise SettingsMismatch(path, key, old.get(key), new.get(key))


class SweepCsv:
    """A sweep CSV open for one run's appends; use as a context manager.

    ``SweepCsv(path, settings, resume=False)`` creates ``path`` (it must not exist: FileExistsError
    otherwise, also when another run has just created it) and writes the header with ``settings``.
    ``resume=True`` on an existing file reads what a previous run wrote into ``previous`` after
    checking that it was made with the same settings (SettingsMismatch names the first
    difference), and drops a last row cut short (through a temporary file and ``os.replace``). The
    file is locked while open: a second run on it gets FileSafetyError ("in use"). A file this run
    created and wrote no row to is removed on :meth:`close`, so a run that finishes nothing leaves
    nothing behind.

    Raises (on creation): SweepCsvError, FileSafetyError, OSError.
    """

    def __init__(self, path: str | os.PathLike[str], settings: dict, *, resume: bool) -> None:
        self.path, self.settings = Path(path), dict(settings)
        self.previous: list[ImageRow] = []
        self.resumed = False
        self.rows_written = 0
        self._created = False
        if resume and os.path.lexists(self.path):
            self._fd = self._open_existing()
            self.resumed = True
        else:
            self._fd = self._create()

    def _create(self) -> int:
        fd = create_exclusive(self.path)
        self._created = True
        try:
            lock(fd, self.path)
            write_all(fd, header_text(self.settings).encode("utf-8"))
        except BaseException:
            self._remove_if_ours(fd)
            os.close(fd)
            raise
        return fd

    def _open_existing(self) -> int:
        fd = open_regular(self.path, os.O_RDWR | os.O_APPEND)
        try:
            lock(fd, self.path)
            text = _read_fd(fd, self.path)
            complete = _complete(text)
            if not complete.strip():  # an empty file: nothing to keep, start it
                os.ftruncate(fd, 0)
                write_all(fd, header_text(self.settings).encode("utf-8"))
                return fd
            settings, self.previous = parse_csv(self.path, complete)
            check_settings(self.path, settings, self.settings)
            if complete != text:
                return self._rewrite(fd, complete)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _rewrite(self, fd: int, text: str) -> int:
        """Replace the file by ``text`` (temporary file, fsync, os.replace); a descriptor of the new
        file, locked. The old one is closed."""
        mode = os.fstat(fd).st_mode & 0o7777

        def write(fh) -> None:
            os.fchmod(fh.fileno(), mode)
            fh.write(text.encode("utf-8"))

        write_atomic(self.path, write)
        new = open_regular(self.path, os.O_RDWR | os.O_APPEND)
        try:
            lock(new, self.path)
        except BaseException:
            os.close(new)
            raise
        os.close(fd)
        return new

    def done(self) -> set[tuple[str, str, Setting]]:
        """The (image, layer, setting) the previous run finished."""
        return {(row.image, row.layer, row.setting) for row in self.previous}

    def write(self, rows: list[ImageRow]) -> None:
        """Append ``rows`` (one image's) in one write: all of them reach the file or none (a failed
        write is cut back). Raises OSError when the file cannot be written."""
        if self._fd is None:
            raise ValueError(f"{str(self.path)!r} is closed")
        write_all(self._fd, "".join(_quoted(_format(row)) for row in rows).encode("utf-8"))
        self.rows_written += len(rows)

    def _remove_if_ours(self, fd: int) -> None:
        st = os.fstat(fd)
        try:
            here = os.stat(self.path)
        except OSError:
            return
        if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(self.path)

    def close(self) -> None:
        """Release the file; one this run created and wrote no row to is removed."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._created and not self.rows_written:
                self._remove_if_ours(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> SweepCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
