"""dropblock.files and dropblock.walk: regular-file reads that never block, atomic and exclusive writes,
same-file checks, writability proved up front, temporary names within the name limit, loop-free globs."""

from __future__ import annotations

import errno
import glob
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from dropblock.files import (
    FileSafetyError, check_writable, create_exclusive, name_max, open_regular, same_file, temp_path, write_all,
    write_atomic,
)
from dropblock.walk import expand, files_under


class Blocked(BaseException):
    """Raised by :func:`deadline`; not an OSError (TimeoutError is), so no ``except OSError`` swallows it."""


@contextmanager
def deadline(seconds: int = 10):
    """Fail (instead of hanging the suite) when the body blocks, e.g. on a FIFO."""
    def expired(*_):
        raise Blocked(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_open_regular_refuses_a_fifo_without_blocking_and_a_device(tmp_path):
    """Fails (times out) without O_NONBLOCK, and reads /dev/zero for ever without the fstat check."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with deadline(), pytest.raises(FileSafetyError, match="FIFO"):
        open_regular(fifo)
    with pytest.raises(FileSafetyError, match="character device"):
        open_regular("/dev/zero")
    with pytest.raises(FileSafetyError, match="folder"):
        open_regular(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    fd = open_regular(tmp_path / "a.txt")
    assert os.read(fd, 10) == b"x" and os.get_blocking(fd)
    os.close(fd)


def test_same_file_sees_hard_links_symlinks_and_paths_not_yet_there(tmp_path):
    """Fails when only resolved paths are compared (the hard link) or only inodes (the missing file)."""
    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.png")
    (tmp_path / "sym.png").symlink_to(a)
    assert same_file(a, tmp_path / "hard.png") and same_file(tmp_path / "sym.png", a)
    assert same_file(tmp_path / "new.png", tmp_path / "sub" / ".." / "new.png")
    (tmp_path / "b.png").write_bytes(b"x")
    assert not same_file(a, tmp_path / "b.png") and not same_file(a, tmp_path / "new.png")


def test_temporary_names_fit_the_name_limit(tmp_path):
    """U2: a 254-byte output name; fails when the temporary name is the output's name plus a suffix."""
    limit = name_max(tmp_path)
    target = tmp_path / ("é" * ((limit - 4) // 2) + ".png")
    assert len(os.fsencode(target.name)) <= limit
    tmp = temp_path(target)
    assert len(os.fsencode(tmp.name)) <= limit and tmp.name.startswith(".") and tmp.parent == tmp_path
    write_atomic(target, lambda fh: fh.write(b"data"))
    assert target.read_bytes() == b"data" and os.listdir(tmp_path) == [target.name]


def test_write_atomic_leaves_the_old_file_and_no_temporary_on_any_failure(tmp_path, monkeypatch):
    """A failing writer, a failing os.replace (a kill at that moment) and Ctrl-C: the target keeps its bytes."""
    target = tmp_path / "out.csv"
    target.write_bytes(b"precious")

    def boom(fh):
        fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(target, boom)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, lambda fh: fh.write(b"new"))
    assert target.read_bytes() == b"precious" and os.listdir(tmp_path) == ["out.csv"]


def test_create_exclusive_lets_one_creator_win(tmp_path):
    """D3: fails when the file is opened with "w" (both creators succeed)."""
    fd = create_exclusive(tmp_path / "s.csv")
    with pytest.raises(FileExistsError):
        create_exclusive(tmp_path / "s.csv")
    os.close(fd)


def test_write_all_cuts_a_failed_append_back(tmp_path, monkeypatch):
    """U3 and whole rows: half a write, then ENOSPC; the file is its old length again."""
    path = tmp_path / "s.csv"
    fd = create_exclusive(path)
    write_all(fd, b"header\n")
    real = os.write

    def half_then_full(fd_, data):
        real(fd_, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        write_all(fd, b"row 1\nrow 2\n")
    monkeypatch.undo()
    os.close(fd)
    assert path.read_bytes() == b"header\n"


def test_check_writable_before_any_work(tmp_path, monkeypatch):
    """D5: a missing folder, a name over the limit, a FIFO in place, a folder that takes no file."""
    with pytest.raises(FileSafetyError, match="does not exist"):
        check_writable(tmp_path / "no" / "x.png")
    with pytest.raises(FileSafetyError, match="over this file system's limit"):
        check_writable(tmp_path / ("x" * 300 + ".png"))
    os.mkfifo(tmp_path / "p.png")
    with pytest.raises(FileSafetyError, match="FIFO"):
        check_writable(tmp_path / "p.png")
    check_writable(tmp_path / "ok.png")
    assert sorted(os.listdir(tmp_path)) == ["p.png"]  # the probe is gone
    real = os.open

    def read_only(path, flags, *args):
        if Path(path).parent == tmp_path and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(FileSafetyError, match="Read-only file system"):
        check_writable(tmp_path / "ok.png")


def _tree(root: Path) -> None:
    for rel in ("a.jpg", "b.png", ".hidden.jpg", "d/c.jpg", "d/e/f.jpg", "d/.g/h.jpg", "[x].jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


@pytest.mark.parametrize("pattern", ["*.jpg", "*", "d/*", "**", "**/*.jpg", "d/**", "d/**/*.jpg", "?.png",
                                     "[ab].*", ".*", "d/*/f.jpg", "**/e", "a.jpg", "nothing/*"])
def test_expand_matches_glob_where_there_is_no_link(tmp_path, monkeypatch, pattern):
    """Without symlinks, expand is glob.glob(recursive=True) with folders' trailing '/' dropped."""
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    want = sorted({os.path.normpath(p) for p in glob.glob(pattern, recursive=True)})
    assert sorted(str(p) for p in expand(pattern)) == want


def test_symlink_loops_end_and_each_file_is_found_once(tmp_path, monkeypatch):
    """H2: d/a and d/b link to '.', d/loop to itself. glob.glob('d/**') grows exponentially here; fails
    (times out or lists d/a/b/a/...) when real folders are not listed once per pattern step."""
    monkeypatch.chdir(tmp_path)
    _tree(tmp_path)
    for name in ("l1", "l2"):
        (tmp_path / "d" / name).symlink_to(".")
    (tmp_path / "d" / "loop").symlink_to("loop")
    with deadline():
        everything = [str(p) for p in expand("d/**")]
        jpgs = [str(p) for p in expand("d/**/*.jpg")]
        under = [str(p) for p in files_under("d")]
    assert jpgs == ["d/c.jpg", "d/e/f.jpg"]
    assert under == ["d/c.jpg", "d/e/f.jpg", "d/loop"]  # the loop is found, not followed: the caller skips it
    assert "d/l1/l2/c.jpg" not in everything and len(everything) == len(set(everything))
