"""The paper's Figure 5 on your own images: a regularizer applied at inference to one or more layers
of a trained network, swept over keep_prob, block size and method, across many images.

For every image, layer and setting (method, block size for DropBlock, keep_prob), N masks are drawn
and each applied to the layer's (1, C, h, w) activation as training would (kept units rescaled); the
rest of the network runs in eval mode (the engine: :mod:`dropblock.sweep_engine`). Two series touch
the network's input instead: ``cutout-input`` (Cutout on the preprocessed input crop at the setting's
drop rate) and ``cutout-input+dropblock`` (that, and DropBlock on the layer, each at the setting's
drop rate). Per image, layer and setting it measures, averaged over the masks: the realized drop
rate (of the layer's map; of the input for ``cutout-input``), KL(clean || after) in nats, the
agreement of the top-1 class with the clean top-1, and the accuracy when the true class is known
(all fractions in [0, 1]).

Seeds: each (image, setting) draws from its own generator, seeded from the run's seed, the image's
content (SHA-256 of the file's bytes, so where the file lies does not matter) and the setting
(:func:`setting_seed`), not the layer: layers of one shape get the same masks (common random numbers,
which sharpen the comparison of layers), and ``cutout-input+dropblock`` reuses the masks of
``cutout-input`` and of DropBlock at the same block size and keep_prob. An image's results never
depend on the other images or layers of the run, on the order of the settings, or on whether the run
was resumed (images that share passes, :func:`~dropblock.sweep_engine.sweep_group`, share their last
float bits too, so the CLI groups them the same way in every run). keep_prob 1 is the clean network:
no mask and no pass, so its KL is exactly 0 and its agreement exactly 1.

:func:`summarize` averages across images: the masks are averaged within each image first, then the
standard error is taken across images, so it counts the spread of both (it needs two images; with
one it is None). CSV files of the per-image rows: :mod:`dropblock.sweep_csv`. Nothing here prints.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropblock.errors import UsageError
from dropblock._checks import check_choice, check_positive_int
from dropblock.method_names import FEATURE_METHODS
from dropblock.stats import MeanSE

__all__ = [
    "SWEEP_METHODS", "INPUT_METHODS", "BLOCK_METHODS", "DEFAULT_KEEP_PROBS", "DEFAULT_BLOCK_SIZES", "Setting",
    "ImageRow", "SweepPoint", "settings_grid", "series_name", "parse_series", "content_id", "setting_seed",
    "summarize", "point_json", "find_images",
]

INPUT_METHODS = ("cutout-input", "cutout-input+dropblock")
"""Series that cut the network's input crop (a full pass per mask, not a pass of the layers after the layer)."""
SWEEP_METHODS = FEATURE_METHODS + INPUT_METHODS
BLOCK_METHODS = ("dropblock", "cutout-input+dropblock")
"""Series with a DropBlock block size (one series per size)."""
DEFAULT_KEEP_PROBS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
DEFAULT_BLOCK_SIZES = (1, 3, 5, 7)
BATCH_SIZE = 32
"""Edited maps per pass through the rest of the network."""


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: ``method`` (:data:`SWEEP_METHODS`), ``block_size`` (DropBlock's side in
    feature-map units, clipped to the map when drawn; None for the methods not in :data:`BLOCK_METHODS`)
    and ``keep_prob`` (1 - drop rate)."""

    method: str
    block_size: int | None
    keep_prob: float

    @property
    def series(self) -> tuple[str, int | None]:
        """(method, block_size): one line of the figure."""
        return (self.method, self.block_size)


def _check_setting(s: Setting) -> None:
    check_choice(s.method, "method", SWEEP_METHODS)
    if not 0.0 < float(s.keep_prob) <= 1.0:
        raise UsageError(f"keep_prob must be in (0, 1], got {s.keep_prob!r}")
    if s.method in BLOCK_METHODS:
        check_positive_int(s.block_size, "block_size")
    elif s.block_size is not None:
        raise UsageError(f"block_size must be None for {s.method}, got {s.block_size!r}")


def settings_grid(methods: Sequence[str], block_sizes: Sequence[int], keep_probs: Sequence[float]) -> list[Setting]:
    """Every (method, block size, keep_prob): the :data:`BLOCK_METHODS` once per block size, the others
    once; in the order given (methods, then block sizes, then keep_probs).

    Raises:
        ValueError: an unknown method, a block size < 1 or a keep_prob outside (0, 1]; or nothing to do.
    """
    out = []
    for method in methods:
        for b in (block_sizes if method in BLOCK_METHODS else (None,)):
            for kp in keep_probs:
                s = Setting(method, None if b is None else int(b), float(kp))
                _check_setting(s)
                out.append(s)
    if not out:
        raise UsageError("the sweep needs at least one method, block size and keep_prob")
    return out


def series_name(series: tuple[str, int | None]) -> str:
    """A series (method, block size) as ``--baseline`` and the JSON name it: ``dropout``, ``dropblock:7``."""
    method, block = series
    return method if block is None else f"{method}:{block}"


def parse_series(text: str) -> tuple[str, int | None]:
    """The (method, block size) of ``dropout`` or ``dropblock:7``. Raises ValueError on anything else."""
    method, sep, block = str(text).strip().partition(":")
    if method not in SWEEP_METHODS:
        raise UsageError(f"unknown series {text!r}: one of {', '.join(SWEEP_METHODS)}, a block method as "
                         f"{BLOCK_METHODS[0]}:SIZE")
    if method in BLOCK_METHODS and not sep:
        raise UsageError(f"series {text!r}: give its block size, e.g. {method}:7")
    if sep and method not in BLOCK_METHODS:
        raise UsageError(f"series {text!r}: {method} has no block size")
    if not sep:
        return method, None
    if not block.isdigit() or int(block) < 1:
        raise UsageError(f"series {text!r}: the block size must be a whole number >= 1")
    return method, int(block)


def content_id(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes: the image's identity for its seeds. Raises OSError
    (:class:`~dropblock.files.FileSafetyError` for a FIFO, a device or a socket: never blocks)."""
    from dropblock.files import open_regular

    digest = hashlib.sha256()
    with open(open_regular(path), "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def setting_seed(seed: int, content: str, setting: Setting) -> int:
    """The generator seed, in [0, 2^63), of one image (its :func:`content_id`) and one setting."""
    text = f"dropblock-sweep|{int(seed)}|{content}|{setting.method}|{setting.block_size}|{float(setting.keep_prob)!r}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class ImageRow:
    """One image, layer and setting, averaged over its ``masks`` masks: ``drop_rate`` (realized),
    ``kl`` (KL(clean || after), nats), ``agreement`` (fraction of masks whose top-1 is the clean
    top-1) and ``accuracy`` (fraction whose top-1 is the true class; None without a label).
    ``image`` is the path as found from the run's arguments; (image, layer, setting) is the CSV's key."""

    image: str
    layer: str
    setting: Setting
    masks: int
    drop_rate: float
    kl: float
    agreement: float
    accuracy: float | None


@dataclass(frozen=True)
class SweepPoint:
    """One layer and setting across images. ``images``: how many; ``masks``: in all (images x N).
    ``drop_rate``, ``kl``, ``agreement``: :class:`~dropblock.stats.MeanSE` over the per-image means
    (se across images; see :func:`se_or_none`); ``accuracy``: the same over the images with a known
    class, or None when none has one."""

    layer: str
    setting: Setting
    images: int
    masks: int
    drop_rate: MeanSE
    kl: MeanSE
    agreement: MeanSE
    accuracy: MeanSE | None


def summarize(rows: Iterable[ImageRow], order: Sequence[Setting] | None = None,
              layers: Sequence[str] | None = None) -> list[SweepPoint]:
    """One :class:`SweepPoint` per (layer, setting) found in ``rows``: layers in ``layers`` order, then
    settings in ``order`` (what is not in them follows in order of appearance). A repeated (image, layer,
    setting) counts once (the first row)."""
    groups: dict[tuple[str, Setting], dict[str, ImageRow]] = {}
    for row in rows:
        groups.setdefault((row.layer, row.setting), {}).setdefault(row.image, row)
    rank = {s: i for i, s in enumerate(order or ())}
    layer_rank = {name: i for i, name in enumerate(layers or ())}
    for layer, _ in groups:
        layer_rank.setdefault(layer, len(layer_rank))
    points = []
    for layer, s in sorted(groups, key=lambda k: (layer_rank[k[0]], rank.get(k[1], len(rank)))):
        group = list(groups[layer, s].values())
        labelled = [r.accuracy for r in group if r.accuracy is not None]
        points.append(SweepPoint(
            layer, s, len(group), sum(r.masks for r in group), MeanSE.of([r.drop_rate for r in group]),
            MeanSE.of([r.kl for r in group]), MeanSE.of([r.agreement for r in group]),
            MeanSE.of(labelled) if labelled else None))
    return points


def se_or_none(stat: MeanSE) -> float | None:
    """The standard error across images, or None from a single image (there is no spread to take)."""
    return stat.se if stat.n > 1 else None


def point_json(p: SweepPoint) -> dict:
    """A JSON-ready dict: layer, method, block_size (null but for the block methods), keep_prob, images, masks,
    drop_rate (mean), kl and agreement as {mean, se}, accuracy as {mean, se, images} or null."""
    def stat(m: MeanSE) -> dict:
        return {"mean": m.mean, "se": se_or_none(m)}

    accuracy = None if p.accuracy is None else dict(stat(p.accuracy), images=p.accuracy.n)
    return {"layer": p.layer, "method": p.setting.method, "block_size": p.setting.block_size, "keep_prob": p.setting.keep_prob,
            "images": p.images, "masks": p.masks, "drop_rate": p.drop_rate.mean, "kl": stat(p.kl),
            "agreement": stat(p.agreement), "accuracy": accuracy}


@dataclass(frozen=True)
class FoundImages:
    """``paths``: candidate image files (regular files), each once, in a stable order; ``missing``:
    the arguments that named nothing (no such file or folder, a glob that matches nothing, an empty
    folder); ``skipped``: (path, reason) of what was found but cannot be read as a file (a FIFO, a
    device, a socket, a symlink loop), never opened."""

    paths: list[Path]
    missing: list[str]
    skipped: list[tuple[Path, str]]


def _matches(arg: str) -> list[Path]:
    """What one argument names: itself (a file), the files under it (a folder), or a glob's hits
    (folders among them searched)."""
    from dropblock.walk import expand, files_under, has_magic

    if os.path.isdir(arg):
        return files_under(arg)
    if os.path.lexists(arg):
        return [Path(arg)]
    if not has_magic(arg):
        return []
    out = []
    for hit in expand(arg):
        out.extend(files_under(hit) if hit.is_dir() else [hit])
    return out


def _unreadable(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(device, inode) of a regular file, or (None, why it is skipped)."""
    from dropblock.files import kind_of

    try:
        st = os.stat(path)
    except OSError as e:
        what = "a symlink loop" if e.errno == errno.ELOOP else (e.strerror or str(e)).lower()
        return None, f"cannot read {str(path)!r}: {what}"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{str(path)!r} is {kind_of(st.st_mode)}, not a regular file"
    return (st.st_dev, st.st_ino), None


def find_images(args: Sequence[str]) -> FoundImages:
    """The files that ``args`` name: files as given, folders searched recursively (every file that is
    not hidden is a candidate; the caller skips what does not load), globs (``*``, ``?``, ``[``,
    ``**``) expanded and sorted (:mod:`dropblock.walk`: no symlink loop is followed twice). A file
    named twice, or through two links, is kept once (the first time). Anything that is not a regular
    file goes to ``skipped`` unopened, so nothing can block on a FIFO or read a device for ever."""
    found, missing, skipped, seen = [], [], [], set()
    for arg in args:
        matches = _matches(str(arg))
        if not matches:
            missing.append(str(arg))
        for m in matches:
            key, reason = _unreadable(m)
            if key is None:
                if m not in {s for s, _ in skipped}:
                    skipped.append((m, reason))
            elif key not in seen:
                seen.add(key)
                found.append(m)
    return FoundImages(found, missing, skipped)
