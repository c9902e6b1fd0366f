"""Globs and folder walks that end: each real folder is listed at most once per pattern step, so a
symlink loop (``d/a -> .``) or a folder linked twice cannot make the search grow, and each file is
found once (by device and inode).

:func:`expand` is ``glob.glob(pattern, recursive=True)`` without its blow-up: ``*``, ``?`` and
``[...]`` match within one name, ``**`` matches any number of folders (symlinked folders are
followed, each real folder once), and names starting with ``.`` match only a pattern that starts
with ``.``. :func:`files_under` is every file below a folder, hidden ones left out. Unreadable
folders are passed over. Nothing here prints.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from pathlib import Path

from dropblock.files import file_key

__all__ = ["has_magic", "expand", "files_under"]

_MAGIC = re.compile(r"[*?[]")


def has_magic(text: str) -> bool:
    """True when ``text`` holds a glob character (``*``, ``?`` or ``[``)."""
    return _MAGIC.search(text) is not None


def _entries(folder: str) -> list[tuple[str, bool]]:
    """(name, is a folder) of every entry of ``folder``, sorted; [] when it cannot be listed."""
    try:
        with os.scandir(folder or ".") as it:
            found = []
            for entry in it:
                try:
                    is_dir = entry.is_dir()  # follows symlinks; a loop or a dangling link is not a folder
                except OSError:
                    is_dir = False
                found.append((entry.name, is_dir))
    except OSError:
        return []
    return sorted(found)


class _Search:
    """One expansion: the (step, folder) pairs already listed, and what matched, in order."""

    def __init__(self) -> None:
        self.listed: set[tuple[int, tuple[int, int]]] = set()
        self.found: list[str] = []

    def first_visit(self, step: int, folder: str) -> bool:
        key = file_key(folder or ".")
        if key is None or (step, key) in self.listed:
            return False
        self.listed.add((step, key))
        return True

    def match(self, folder: str, parts: tuple[str, ...], step: int = 0) -> None:
        """Every path below ``folder`` that ``parts[step:]`` matches, into ``found``."""
        if step == len(parts):
            if folder:  # '**' on its own matches below the working folder, not the folder itself
                self.found.append(folder)
            return
        head, last = parts[step], step == len(parts) - 1
        if head == "**":
            if not self.first_visit(step, folder):
                return
            self.match(folder, parts, step + 1)  # no folder at all
            for name, is_dir in _entries(folder):
                if name.startswith("."):
                    continue
                if is_dir:
                    self.match(os.path.join(folder, name), parts, step)
                elif last:
                    self.found.append(os.path.join(folder, name))
        elif not has_magic(head):
            child = os.path.join(folder, head)
            if last and os.path.lexists(child) or not last and os.path.isdir(child):
                self.match(child, parts, step + 1)
        else:
            if not self.first_visit(step, folder):
                return
            for name, is_dir in _entries(folder):
                if name.startswith(".") and not head.startswith("."):
                    continue
                if fnmatchcase(name, head) and (last or is_dir):
                    self.match(os.path.join(folder, name), parts, step + 1)


def _split(pattern: str) -> tuple[str, tuple[str, ...]]:
    """(the literal folder the pattern starts in, the remaining steps)."""
    parts = Path(pattern).parts
    root = ""
    for i, part in enumerate(parts):
        if has_magic(part):
            return root, tuple(parts[i:])
        root = os.path.join(root, part) if root else part
    return os.path.dirname(root), (os.path.basename(root),)


def expand(pattern: str) -> list[Path]:
    """The paths ``pattern`` matches (files and folders), sorted, each at most once; see the module."""
    root, steps = _split(pattern)
    if root and not os.path.isdir(root):
        return []
    search = _Search()
    search.match(root, steps)
    return expand_found(search.found)


def files_under(folder: str | os.PathLike[str]) -> list[Path]:
    """Every entry below ``folder`` that is not a folder (regular files, FIFOs, dangling links ...:
    the caller sorts them out), recursively and sorted, hidden files and folders left out; symlinked
    folders are followed, each real folder once."""
    search = _Search()
    search.match(str(folder), ("**", "*"))
    return [p for p in expand_found(search.found) if not p.is_dir()]


def expand_found(found: list[str]) -> list[Path]:
    """``found`` sorted, each file once (by device and inode; by path when it cannot be reached)."""
    seen, out = set(), []
    for hit in sorted(found):
        key = file_key(hit) or ("path", os.path.abspath(hit))
        if key not in seen:
            seen.add(key)
            out.append(Path(hit))
    return out
