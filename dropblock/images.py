"""Load any image Pillow can read as an (H, W, 3) uint8 RGB array.

Every problem becomes an :class:`ImageLoadError` whose message is one line
saying what was wrong and what to do. Nothing here prints, and nothing here
changes Pillow's global settings (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone;
the decompression-bomb warning is turned into an error only inside
``warnings.catch_warnings``).

Conversions to RGB:

* ``L``, ``1``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ... : Pillow's ``convert``.
  CMYK is converted without colour management (ICC profiles are ignored).
* Anything with transparency (``RGBA``, ``LA``, ``PA``, premultiplied modes,
  ``P``/``L``/``RGB`` with a ``transparency`` entry): alpha is composited on
  white, so a fully transparent pixel becomes (255, 255, 255).
* High-bit-depth grey (``I;16*``: 16-bit, ``I``: 32-bit signed, ``F``: 32-bit
  float): stretched linearly from the data's own min..max to 0..255 (non-finite
  values become 0). The data's range is used rather than the type's range
  because such files rarely fill their type (a 12-bit sensor in a 16-bit TIFF
  would look almost black, and ``I``/``F`` have no useful type range). A
  constant image keeps its value: ``I;16`` scaled by 255/65535, ``I``/``F``
  clipped to 0..255.
* EXIF orientation is applied (``ImageOps.exif_transpose``).
* Multi-frame files (GIF, animated WebP/PNG, multi-page TIFF): first frame.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dropblock.errors import one_line

__all__ = ["ImageLoadError", "LoadedImage", "load_image", "check_resize", "resized_pixels", "is_dropblock_figure",
           "file_is_dropblock_figure", "FIGURE_SOFTWARE"]

# EXIF Orientation tag (0x0112) value -> what exif_transpose does to show it upright.
_ORIENTATION_NOTES = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "transposed (mirrored and rotated 90°)",
    6: "rotated 90° clockwise",
    7: "transversed (mirrored and rotated 90°)",
    8: "rotated 90° counter-clockwise",
}

_ALPHA_MODES = {"RGBA", "LA", "PA", "La", "RGBa"}
_HIGH_DEPTH_PREFIXES = ("I;16", "I;32")  # plus the exact modes "I" and "F"

_SUPPORTED_HINT = "use a JPEG, PNG, GIF, TIFF, WebP or BMP image"

FIGURE_SOFTWARE = "dropblock"
"""How a figure of this package marks itself: the start of its PNG ``Software`` text (and of its SVG
and PDF ``Creator``), so that a later sweep of the folder does not take it for a photo."""


class ImageLoadError(Exception):
    """An image could not be loaded; ``str(err)`` is one line: the problem and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image.

    pixels: (H, W, 3) uint8 RGB, upright (EXIF orientation applied), alpha composited on white.
    path: the file it came from.
    format: Pillow's format name, e.g. "JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP".
    original_mode: the Pillow mode of the decoded frame before conversion, e.g. "P", "I;16".
    notes: one-line remarks on what was done to get RGB, e.g. "alpha composited on white".
    dropblock_figure: the file is a figure this package saved (:func:`is_dropblock_figure`).
    """

    pixels: np.ndarray
    path: Path
    format: str
    original_mode: str
    notes: tuple[str, ...] = ()
    dropblock_figure: bool = False

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])


def _q(path: Path | str) -> str:
    """The path quoted for a one-line message (repr escapes newlines)."""
    return repr(str(path))


def _open_file(p: Path, name: str):
    """``p`` opened for reading (binary), a readable, non-empty regular file, or ImageLoadError.
    A FIFO, a device or a socket is refused without reading (it could block or never end)."""
    from dropblock.files import FileSafetyError, open_regular

    try:
        fh = open(open_regular(p), "rb")
    except FileNotFoundError:
        raise ImageLoadError(f"cannot read {name}: no such file; check the path") from None
    except PermissionError:
        raise ImageLoadError(f"cannot read {name}: permission denied; check the file's permissions") from None
    except IsADirectoryError:
        raise ImageLoadError(f"cannot read {name}: it is a directory; give an image file") from None
    except FileSafetyError as exc:
        raise ImageLoadError(f"cannot read {name}: {_what_it_is(exc)}; give an image file") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read {name}: {one_line(exc)}; check the path") from None
    if os.fstat(fh.fileno()).st_size == 0:
        fh.close()
        raise ImageLoadError(f"cannot read {name}: the file is empty; {_SUPPORTED_HINT}")
    return fh


def _what_it_is(exc: BaseException) -> str:
    """"it is a FIFO (named pipe), not a regular file" from open_regular's message."""
    text = str(exc)
    return "it" + text[text.index(" is "):] if " is " in text else text


def resized_pixels(height: int, width: int, short_side: int) -> int:
    """Pixels of an image of ``height`` x ``width`` once scaled so its short side is ``short_side``
    (upscaled or downscaled, as a network's preprocessing does)."""
    short, long = sorted((int(height), int(width)))
    return int(short_side) * int(short_side * long / max(short, 1))


def check_resize(height: int, width: int, short_side: int, name: str = "the image") -> None:
    """Raise ImageLoadError when scaling a ``height`` x ``width`` image to ``short_side`` px on its
    short side would make more than :data:`~dropblock.limits.MAX_RESIZED_PIXELS` pixels (a
    100000x3 strip scaled to 256 px is 2185 megapixels); checked before anything is allocated."""
    from dropblock.limits import MAX_RESIZED_PIXELS

    pixels = resized_pixels(height, width, short_side)
    if pixels > MAX_RESIZED_PIXELS:
        raise ImageLoadError(
            f"cannot read {name}: scaled to {short_side} px on its short side, its {width}x{height} pixels would "
            f"become {pixels / 1e6:,.1f} megapixels, over the limit of {MAX_RESIZED_PIXELS / 1e6:.1f} megapixels; "
            "crop it to a less elongated shape")


def _bomb(exc: BaseException, name: str) -> ImageLoadError:
    """Pillow's decompression-bomb error as one line with the image's and the limit's megapixels."""
    from PIL import Image

    m = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(m.group(1)) / 1e6:.1f} megapixels" if m else "too many pixels"
    limit = Image.MAX_IMAGE_PIXELS
    lim = f"{limit / 1e6:.1f} megapixels" if limit else "its limit"
    return ImageLoadError(
        f"cannot read {name}: the image has {size}, over Pillow's decompression-bomb limit of {lim}; downscale it first"
    )


def _open(fh, name: str):
    """``PIL.Image.open(fh)`` with every failure as one ImageLoadError line (call inside a
    ``warnings.catch_warnings`` that makes DecompressionBombWarning an error)."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(fh)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc, name) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"cannot read {name}: not an image file Pillow recognises; {_SUPPORTED_HINT}") from None
    except Exception as exc:  # a plugin choking on a corrupt header
        raise ImageLoadError(
            f"cannot read {name}: the file is corrupt ({one_line(exc)}); re-export it or pick another image"
        ) from None


def _decode(im, name: str, notes: list[str]) -> tuple[np.ndarray, str]:
    """The first frame of an open image, fully decoded, upright and converted to (H, W, 3) uint8 RGB,
    and its mode before the conversion."""
    fmt = im.format or "unknown"
    n_frames = int(getattr(im, "n_frames", 1) or 1)
    if n_frames > 1:
        im.seek(0)
        notes.append(f"{fmt} with {n_frames} frames: using the first frame")
    im.load()  # a full decode now: a truncated file fails here instead of yielding a partly grey image
    mode = im.mode
    orientation = _orientation(im)
    if orientation in _ORIENTATION_NOTES:
        from PIL import ImageOps

        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied ({_ORIENTATION_NOTES[orientation]})")
    return _to_rgb(im, notes, name), mode


def _decode_or_fail(im, name: str, notes: list[str]) -> tuple[np.ndarray, str]:
    """:func:`_decode` with decoder failures as one ImageLoadError line."""
    from PIL import Image

    try:
        return _decode(im, name, notes)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb(exc, name) from None
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError(f"cannot read {name}: not enough memory to decode it; downscale it first") from None
    except Exception as exc:  # OSError("image file is truncated"), decoder errors
        raise ImageLoadError(
            f"cannot read {name}: file is truncated or corrupt ({one_line(exc)}); re-export it or pick another image"
        ) from None


def load_image(path: str | os.PathLike[str], *, short_side: int | None = None) -> LoadedImage:
    """Read an image file into a :class:`LoadedImage` with (H, W, 3) uint8 RGB pixels.

    ``short_side``: the image will be scaled so its short side is this many pixels (a network's
    resize); it is refused, from its header and before it is decoded, when that would exceed
    :data:`~dropblock.limits.MAX_RESIZED_PIXELS` (:func:`check_resize`).

    Raises ImageLoadError for a missing path, a directory, a FIFO, device or socket (never read), an
    empty file, a file that is not an image, a truncated or corrupt file (the whole image is
    decoded, so a half image is never returned), an image above Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``), one too elongated for ``short_side``, or a file that cannot be
    read (permissions).
    """
    from PIL import Image

    p = Path(path)
    name = _q(p)
    notes: list[str] = []
    with _open_file(p, name) as fh, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open(fh, name) as im:
            if short_side is not None:
                check_resize(im.height, im.width, short_side, name)
            fmt = im.format or "unknown"
            ours = is_dropblock_figure(im)
            pixels, original_mode = _decode_or_fail(im, name, notes)
    return LoadedImage(pixels=np.ascontiguousarray(pixels, dtype=np.uint8), path=p, format=fmt,
                       original_mode=original_mode, notes=tuple(notes), dropblock_figure=ours)


def is_dropblock_figure(im) -> bool:
    """True for a PNG this package wrote: its ``Software`` text starts with :data:`FIGURE_SOFTWARE`
    (read from the header, nothing decoded)."""
    return str(im.info.get("Software", "")).startswith(FIGURE_SOFTWARE)


def _orientation(im) -> int:
    """The EXIF Orientation value (1..8), or 1 when absent or unreadable."""
    try:
        value = im.getexif().get(0x0112, 1)
        return int(value)
    except Exception:
        return 1


def _has_alpha(im) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _to_rgb(im, notes: list[str], name: str) -> np.ndarray:
    """Convert a loaded Pillow image to (H, W, 3) uint8 RGB, appending notes."""
    mode = im.mode
    if mode in ("I", "F") or mode.startswith(_HIGH_DEPTH_PREFIXES):
        grey = _stretch(np.asarray(im), mode, notes)
        return np.repeat(grey[:, :, None], 3, axis=2)

    if _has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
        rgb = rgba[:, :, :3].astype(np.float32)
        if (rgba[:, :, 3] < 255).any():
            notes.append("alpha composited on white")
        out = rgb * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    if mode == "RGB":  # no conversion: skip Pillow's copy (a 48-megapixel photo is 144 MB)
        return np.asarray(im)
    if mode == "CMYK":
        notes.append("CMYK converted to RGB without colour management")
    elif mode not in ("RGB", "L", "1", "P"):
        notes.append(f"{mode} converted to RGB")
    try:
        return np.asarray(im.convert("RGB"))
    except ValueError as exc:
        raise ImageLoadError(
            f"cannot read {name}: cannot convert image mode {mode} to RGB ({one_line(exc)}); "
            "re-export it as 8-bit RGB"
        ) from None


def _stretch(values: np.ndarray, mode: str, notes: list[str]) -> np.ndarray:
    """High-bit-depth grey (H, W) -> uint8 (H, W), stretched from the data's min..max."""
    data = values.astype(np.float64)
    if data.ndim == 3:  # defensive: some plugins give (H, W, 1)
        data = data[:, :, 0]
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, 0.0)
    lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    depth = "16-bit" if mode.startswith("I;16") else ("float" if mode == "F" else "32-bit")
    if hi > lo:
        out = (data - lo) * (255.0 / (hi - lo))
        notes.append(f"{depth} grey ({mode}) stretched from its range {lo:g}..{hi:g} to 0..255")
    else:
        out = data * (255.0 / 65535.0) if mode.startswith("I;16") else data
        notes.append(f"{depth} grey ({mode}) is constant ({lo:g}): no stretch")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def file_is_dropblock_figure(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file holding a figure this package saved (its header is read,
    nothing decoded); False for anything else, unreadable files included."""
    from PIL import Image

    try:
        with _open_file(Path(path), _q(path)) as fh, Image.open(fh) as im:
            return is_dropblock_figure(im)
    except Exception:  # not an image, not a regular file, unreadable: not ours
        return False
