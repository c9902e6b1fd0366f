"""Images decoded ahead of the work that uses them, optionally in worker processes.

:func:`load_images` yields one :class:`ImageItem` per path, in the order given: the file's
:func:`~dropblock.sweep.content_id` (what its seeds come from), its (H, W, 3) uint8 RGB pixels, or the
one line that says why it is skipped (unreadable, not an image, too large once resized, a figure
dropblock made). With ``workers`` > 0 a ``torch.utils.data.DataLoader`` over the paths does the reading,
hashing and decoding in that many processes, ``prefetch`` items each ahead of the consumer, so the main
process only runs the network. The items are the same either way: an item depends on its file alone.

Nothing here prints.
"""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropblock._checks import check_positive_int

__all__ = ["ImageItem", "LoaderError", "load_item", "load_images"]


@dataclass(frozen=True)
class ImageItem:
    """One path, loaded: ``content`` (SHA-256 hex of its bytes) and ``pixels`` ((H, W, 3) uint8 RGB), or
    ``error``, one line saying why it cannot be used (then ``content`` and ``pixels`` are None)."""

    path: Path
    content: str | None
    pixels: np.ndarray | None
    error: str | None = None


class LoaderError(RuntimeError):
    """The worker processes failed (one was killed, or could not start); ``str(err)`` is one line."""


def load_item(path: str | os.PathLike[str], short_side: int | None = None) -> ImageItem:
    """``path`` read, hashed and decoded; ``short_side`` as for :func:`~dropblock.images.load_image`
    (an image that would grow past the pixel limit once resized is refused from its header). Never
    raises for a bad file: the reason is the item's ``error``."""
    from dropblock.errors import one_line
    from dropblock.images import ImageLoadError, load_image
    from dropblock.sweep import content_id

    path = Path(path)
    try:
        content = content_id(path)
        loaded = load_image(path, short_side=short_side)
    except (ImageLoadError, OSError) as e:
        return ImageItem(path, None, None, one_line(e))
    if loaded.dropblock_figure:
        return ImageItem(path, None, None, f"{str(path)!r} is a figure dropblock made, not a photo")
    return ImageItem(path, content, loaded.pixels)


class _Paths:
    """A map-style dataset over ``paths`` (what a DataLoader's workers index)."""

    def __init__(self, paths: Sequence[Path], short_side: int | None) -> None:
        self.paths, self.short_side = list(paths), short_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> ImageItem:
        return load_item(self.paths[index], self.short_side)


def _identity(item: ImageItem) -> ImageItem:
    """The DataLoader's collate: items pass as they are (no batching, no tensor conversion)."""
    return item


def load_images(paths: Sequence[str | os.PathLike[str]], *, workers: int = 0, short_side: int | None = None,
                prefetch: int = 2) -> Iterator[ImageItem]:
    """One :class:`ImageItem` per path, in order (see the module docstring).

    Args:
        paths: the image files.
        workers: processes that decode ahead; 0 decodes in this process, one path when asked for it.
        short_side: as for :func:`load_item`.
        prefetch: items each worker holds ready (memory: about ``workers * prefetch`` decoded images).

    Raises:
        ValueError: workers < 0 or prefetch < 1. LoaderError: a worker died.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a whole number >= 0, got {workers!r}")
    prefetch = check_positive_int(prefetch, "prefetch")
    paths = [Path(p) for p in paths]
    if workers == 0 or not paths:
        return (load_item(p, short_side) for p in paths)
    return _from_workers(paths, min(workers, len(paths)), short_side, prefetch)


def _ignore_sigterm(worker_id: int) -> None:
    """In a worker: SIGTERM is ignored, and the process that owns the workers stops them as it stops. A job
    scheduler signals the whole process group; a worker that died by it (torch's own handler re-raises a
    SIGTERM that its parent did not send) would be reported as a failure, beside or instead of the run's end."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _from_workers(paths: list[Path], workers: int, short_side: int | None, prefetch: int) -> Iterator[ImageItem]:
    from torch.utils.data import DataLoader

    from dropblock.errors import one_line

    with warnings.catch_warnings():  # more workers than cores is the caller's choice (decoding waits on disks)
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        loader = DataLoader(_Paths(paths, short_side), batch_size=None, shuffle=False, num_workers=workers,
                            collate_fn=_identity, prefetch_factor=prefetch, worker_init_fn=_ignore_sigterm)
        iterator = iter(loader)
    try:
        for _ in range(len(paths)):
            try:
                item = next(iterator)
            except RuntimeError as e:  # "DataLoader worker (pid N) is killed by signal: ..."
                raise LoaderError(f"an image-decoding worker process failed: {one_line(e)}") from None
            yield item
    finally:
        del iterator  # its workers stop now (a consumer that stops early does not leave them running)
