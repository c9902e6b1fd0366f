"""Reading and writing files safely: only regular files are read, every write is atomic, a new file
is created exclusively, and no output is one of the inputs.

* :func:`open_regular` opens a file without blocking and refuses FIFOs, devices, sockets and
  folders (after opening, so a file swapped for a FIFO in between is refused too).
* :func:`write_atomic` writes to a hidden temporary file in the target's folder, then
  ``os.replace``: the target is the complete new file or untouched. :func:`temp_path` keeps the
  temporary name within the file system's name limit.
* :func:`create_exclusive` creates a new file with ``O_EXCL`` (two runs cannot both create it) and
  :func:`lock` takes an advisory lock on it, so two runs never append to one file.
* :func:`same_file` compares resolved paths and ``os.path.samefile`` (hard links, symlinks).
* :func:`check_writable` proves, before a long run, that an output can be written where it goes.

Errors are ``OSError`` (from the system) or :class:`FileSafetyError` (our refusals), each one line.
Nothing here prints.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["FileSafetyError", "kind_of", "open_regular", "file_key", "same_file", "name_max", "temp_path",
           "check_writable", "write_atomic", "create_exclusive", "lock", "write_all"]

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileSafetyError(OSError):
    """A file this package refuses to read or write; ``str(err)`` is one line."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def kind_of(mode: int) -> str:
    """What ``st_mode`` is: ``"a regular file"``, ``"a FIFO (named pipe)"``, ``"a folder"``, ..."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> int:
    """A file descriptor for the regular file ``path`` (``flags`` as for ``os.open``).

    Opened with ``O_NONBLOCK`` (a FIFO does not block the open) and checked with ``fstat`` after
    opening; ``O_NONBLOCK`` is then cleared. Raises FileSafetyError for anything but a regular file,
    OSError when it cannot be opened.
    """
    fd = os.open(path, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileSafetyError(f"{str(path)!r} is {kind_of(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_key(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names (symlinks followed), or None when it cannot be
    reached (missing, a symlink loop, no permission)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when ``a`` and ``b`` are one file: the same resolved path (whether or not it exists),
    or the same device and inode (hard links, symlinks)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    key = file_key(a)
    return key is not None and key == file_key(b)


def name_max(folder: str | os.PathLike[str]) -> int:
    """The longest file name, in bytes, that the file system under ``folder`` takes (255 when it
    does not say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _name_bytes(name: str) -> int:
    return len(os.fsencode(name))


def temp_path(target: Path) -> Path:
    """A new hidden name next to ``target`` (``.NAME.RANDOM.tmp``), with NAME shortened so the whole
    name fits the file system's limit."""
    suffix = f".{secrets.token_hex(6)}.tmp"
    room = name_max(target.parent if str(target.parent) else ".") - _name_bytes(suffix) - 1
    name = target.name
    while name and _name_bytes(name) > room:
        name = name[:-1]
    return target.with_name(f".{name}{suffix}")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise FileSafetyError (or OSError) unless a file can be written at ``path`` now: its folder
    exists and takes a new file (tried, then removed), its name fits the file system's limit, and
    whatever is there already is a regular file."""
    out = Path(path)
    folder = out.parent
    if not os.path.isdir(folder):
        raise FileSafetyError(f"{str(out)!r}: folder {str(folder)!r} does not exist")
    limit = name_max(folder)
    if _name_bytes(out.name) > limit:
        raise FileSafetyError(f"{str(out)!r}: the name is {_name_bytes(out.name)} bytes long, over this file "
                              f"system's limit of {limit}")
    try:
        mode = os.stat(out).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise FileSafetyError(f"{str(out)!r} is {kind_of(mode)}; give the name of a regular file")
    probe = temp_path(out)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise FileSafetyError(f"cannot write in {str(folder)!r}: {e.strerror or e}") from None
    os.unlink(probe)


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a new hidden temporary file next to ``path``, fsync it, then
    ``os.replace`` it onto ``path``: ``path`` is the complete new file or untouched. On any failure
    (Ctrl-C included) the temporary file is removed and the error propagates. Returns ``path``."""
    out = Path(path)
    tmp = temp_path(out)
    created = False
    try:
        with open(tmp, "xb") as fh:
            created = True
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        if created:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    return out


def create_exclusive(path: str | os.PathLike[str]) -> int:
    """A write-only, append-mode descriptor of a file that did not exist (``O_CREAT | O_EXCL``).
    Raises FileExistsError when it exists (another run may just have created it)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o666)


def lock(fd: int, path: str | os.PathLike[str]) -> None:
    """An exclusive advisory lock on ``fd`` without waiting (released when ``fd`` is closed).
    Raises FileSafetyError when another process holds it. A no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FileSafetyError(f"{str(path)!r} is in use by another run") from None
        raise


def write_all(fd: int, data: bytes) -> None:
    """Append ``data`` to ``fd`` whole or not at all: on a failed write (a full disk), the file is cut
    back to its length before the call and the OSError propagates."""
    start = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        try:
            os.ftruncate(fd, start)
        except OSError:
            pass
        raise
