"""dropblock.images: every format and mode loads to (H, W, 3) uint8; bad input fails in one line."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import SAMPLES
from dropblock.images import ImageLoadError, LoadedImage, load_image

H, W = 24, 32
LEFT = (200, 40, 30)  # left half colour
RIGHT = (30, 60, 200)  # right half colour
LOSSY = {"JPEG": 16}  # max abs error per channel at a block centre


def two_tone() -> np.ndarray:
    """(H, W, 3) uint8: LEFT on the left half, RIGHT on the right half."""
    a = np.empty((H, W, 3), np.uint8)
    a[:, : W // 2] = LEFT
    a[:, W // 2 :] = RIGHT
    return a


def palette_image(transparent: bool) -> Image.Image:
    """P image: index 0 left, 1 right; index 2 (top-left 4x4) is transparent when asked."""
    idx = np.zeros((H, W), np.uint8)
    idx[:, W // 2 :] = 1
    if transparent:
        idx[:4, :4] = 2
    im = Image.frombytes("P", (W, H), idx.tobytes())
    im.putpalette(list(LEFT) + list(RIGHT) + [0, 255, 0] + [0, 0, 0] * 253)
    if transparent:
        im.info["transparency"] = 2
    return im


def make(mode: str) -> Image.Image:
    rgb = Image.fromarray(two_tone())
    if mode == "RGB":
        return rgb
    if mode == "L":
        a = np.full((H, W), 100, np.uint8)
        a[:, W // 2 :] = 200
        return Image.fromarray(a)
    if mode == "LA":
        a = np.full((H, W, 2), 100, np.uint8)
        a[:, :, 1] = 255
        a[:4, :4, 1] = 0  # transparent corner
        return Image.fromarray(a, mode="LA")
    if mode == "RGBA":
        a = np.dstack([two_tone(), np.full((H, W), 255, np.uint8)])
        a[:4, :4, 3] = 0  # transparent corner -> white
        a[-4:, :4, 3] = 128  # half transparent corner -> halfway to white
        return Image.fromarray(a)
    if mode == "P":
        return palette_image(transparent=False)
    if mode == "P+t":
        return palette_image(transparent=True)
    if mode == "CMYK":
        return rgb.convert("CMYK")
    raise AssertionError(mode)


def check_two_tone(li: LoadedImage, fmt: str) -> None:
    tol = LOSSY.get(fmt, 0)
    px = li.pixels.astype(int)
    np.testing.assert_allclose(px[H // 2, W // 4], LEFT, atol=tol)
    np.testing.assert_allclose(px[H // 2, 3 * W // 4], RIGHT, atol=tol)


def check_rgb_array(li: LoadedImage) -> None:
    assert isinstance(li, LoadedImage)
    assert li.pixels.shape == (H, W, 3)
    assert li.pixels.dtype == np.uint8
    assert all(isinstance(n, str) and "\n" not in n for n in li.notes)


@pytest.mark.parametrize(
    "fmt, ext, mode",
    [
        ("JPEG", "jpg", "RGB"),
        ("JPEG", "jpg", "L"),
        ("JPEG", "jpg", "CMYK"),
        ("PNG", "png", "RGB"),
        ("PNG", "png", "L"),
        ("PNG", "png", "LA"),
        ("PNG", "png", "P"),
        ("PNG", "png", "P+t"),
        ("PNG", "png", "RGBA"),
        ("GIF", "gif", "P"),
        ("GIF", "gif", "P+t"),
        ("TIFF", "tif", "RGB"),
        ("TIFF", "tif", "RGBA"),
        ("TIFF", "tif", "CMYK"),
        ("TIFF", "tif", "L"),
        ("WEBP", "webp", "RGB"),
        ("WEBP", "webp", "RGBA"),
        ("BMP", "bmp", "RGB"),
        ("BMP", "bmp", "L"),
        ("BMP", "bmp", "P"),
    ],
)
def test_formats_and_modes(tmp_path: Path, fmt: str, ext: str, mode: str) -> None:
    im = make(mode)
    path = tmp_path / f"img_{mode.replace('+', '_')}.{ext}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    if fmt == "JPEG":
        kwargs = {"quality": 95}
    if mode == "P+t":
        kwargs["transparency"] = 2
    im.save(path, format=fmt, **kwargs)

    li = load_image(path)
    check_rgb_array(li)
    assert li.format == fmt
    assert li.path == path
    if mode in ("L", "LA"):
        tol = LOSSY.get(fmt, 0)
        assert abs(int(li.pixels[H // 2, W // 4, 0]) - 100) <= tol
        assert np.ptp(li.pixels[H // 2, W // 4].astype(int)) <= tol  # grey stays grey
    else:
        check_two_tone(li, fmt)
    if mode in ("RGBA", "LA", "P+t"):
        # fully transparent pixel -> white, and the notes say so
        assert tuple(li.pixels[1, 1]) == (255, 255, 255)
        assert any("alpha composited on white" in n for n in li.notes)
    if mode == "RGBA" and fmt in ("PNG", "TIFF", "WEBP"):
        expected = np.rint(np.array(LEFT) * 128 / 255 + 255 * 127 / 255)
        np.testing.assert_allclose(li.pixels[-2, 1].astype(int), expected, atol=1)
    if mode == "CMYK":
        assert li.original_mode == "CMYK"


def test_original_mode_reported(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    make("P+t").save(path, transparency=2)
    assert load_image(path).original_mode == "P"
    path = tmp_path / "rgb.png"
    make("RGB").save(path)
    li = load_image(path)
    assert li.original_mode == "RGB"
    assert li.notes == ()
    assert (li.width, li.height) == (W, H)


def grey_ramp() -> np.ndarray:
    return np.linspace(0, 1, H * W).reshape(H, W).astype(np.float64)


@pytest.mark.parametrize(
    "mode, ext, values",
    [
        ("I;16", "png", (grey_ramp() * 4000 + 100).astype(np.uint16)),  # 12-bit data
        ("I;16", "tif", (grey_ramp() * 65535).astype(np.uint16)),
        ("I", "tif", (grey_ramp() * 2e6 - 1e6).astype(np.int32)),  # negative values too
        ("F", "tif", (grey_ramp() * 3.5 - 1).astype(np.float32)),
    ],
)
def test_high_bit_depth_stretched_to_full_range(tmp_path: Path, mode, ext, values) -> None:
    im = Image.fromarray(values)
    assert im.mode == mode
    path = tmp_path / f"deep.{ext}"
    im.save(path)
    li = load_image(path)
    check_rgb_array(li)
    assert li.original_mode == mode
    px = li.pixels[:, :, 0].astype(int)
    assert (li.pixels[:, :, 0] == li.pixels[:, :, 1]).all()
    assert px.min() == 0 and px.max() == 255  # stretched over the data's range
    assert (np.diff(px.ravel()) >= 0).all()  # ramp stays monotonic
    assert px[0, 0] == 0 and px[-1, -1] == 255
    assert any("stretched" in n for n in li.notes)


def test_constant_16bit_is_not_stretched(tmp_path: Path) -> None:
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((H, W), 65535, np.uint16)).save(path)
    li = load_image(path)
    assert (li.pixels == 255).all()


def test_gif_uses_first_frame_and_says_so(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (W, H), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    li = load_image(path)
    check_rgb_array(li)
    assert tuple(li.pixels[5, 5]) == (255, 0, 0)
    assert any("first frame" in n and "3 frames" in n for n in li.notes), li.notes


def test_multipage_tiff_first_page(tmp_path: Path) -> None:
    pages = [Image.new("L", (W, H), v) for v in (10, 250)]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    li = load_image(path)
    assert tuple(li.pixels[0, 0]) == (10, 10, 10)
    assert any("first frame" in n for n in li.notes)


def test_exif_orientation_6_rotates_clockwise(tmp_path: Path) -> None:
    a = np.zeros((H, W, 3), np.uint8)
    a[:, :] = RIGHT
    a[: H // 2, : W // 2] = LEFT  # marker in the top-left quadrant
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rot.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)

    li = load_image(path)
    assert li.pixels.shape == (W, H, 3)  # width and height swap
    expected = np.rot90(a, k=-1)  # clockwise
    # compare quadrant centres (JPEG is lossy at edges)
    for r, c in [(W // 4, H // 4), (W // 4, 3 * H // 4), (3 * W // 4, H // 4), (3 * W // 4, 3 * H // 4)]:
        np.testing.assert_allclose(li.pixels[r, c].astype(int), expected[r, c], atol=16)
    np.testing.assert_allclose(li.pixels[W // 4, 3 * H // 4].astype(int), LEFT, atol=16)  # now top-right
    assert any("EXIF orientation 6" in n and "90" in n for n in li.notes), li.notes


def test_exif_orientation_1_is_silent(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 1
    path = tmp_path / "upright.jpg"
    Image.fromarray(two_tone()).save(path, exif=exif)
    li = load_image(path)
    assert li.pixels.shape == (H, W, 3)
    assert not any("EXIF" in n for n in li.notes)


# --------------------------------------------------------------------------- bad input


def assert_one_line_error(path, *words: str) -> str:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    assert ";" in msg, f"message should say what to do: {msg}"
    low = msg.lower()
    for w in words:
        assert w in low, f"{w!r} not in {msg!r}"
    return msg


def noise_image(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


def test_missing_file(tmp_path: Path) -> None:
    msg = assert_one_line_error(tmp_path / "nope.jpg", "no such file")
    assert "nope.jpg" in msg


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path, "directory")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_one_line_error(path, "empty")


@pytest.mark.parametrize("fmt, ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_file_is_refused(tmp_path: Path, fmt: str, ext: str) -> None:
    data = noise_image(fmt)
    path = tmp_path / f"half.{ext}"
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(path, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # no global switch flipped


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\nat all\n")
    assert_one_line_error(path, "not an image")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert_one_line_error(path, "not an image")


@pytest.mark.parametrize("size", [(15, 10), (40, 40)])  # warning range, error range
def test_decompression_bomb(tmp_path: Path, monkeypatch, size) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", size).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    filters_before = list(warnings.filters)
    assert_one_line_error(path, "decompression-bomb", "downscale")
    assert list(warnings.filters) == filters_before  # global warning state untouched
    monkeypatch.undo()
    assert load_image(path).pixels.shape == (size[1], size[0], 3)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied_real(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.fromarray(two_tone()).save(path)
    path.chmod(0)
    try:
        assert_one_line_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_permission_denied_simulated(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "secret.png"
    Image.fromarray(two_tone()).save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    assert_one_line_error(path, "permission denied")


def test_error_is_an_exception_with_clean_message() -> None:
    err = ImageLoadError("a\nb   c")
    assert str(err) == "a b c"
    assert isinstance(err, Exception)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    """H1: fails (blocks for ever) when load_image opens the path without files.open_regular."""
    from test_files import deadline

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with deadline(), pytest.raises(ImageLoadError, match="FIFO"):
        load_image(fifo)


def test_short_side_refuses_a_strip_from_its_header(tmp_path):
    """H3: a 100000x3 PNG scaled to 256 px on its short side would be 2185 megapixels; refused before
    decoding (fails without check_resize in load_image). The same strip loads without short_side."""
    from dropblock.images import resized_pixels

    path = tmp_path / "strip.png"
    Image.new("RGB", (100000, 3)).save(path)
    assert resized_pixels(3, 100000, 256) == 256 * 8533333
    with pytest.raises(ImageLoadError, match="over the limit of 89.5 megapixels"):
        load_image(path, short_side=256)
    assert load_image(path).width == 100000
    assert load_image(SAMPLES / "coffee.jpg", short_side=256).height > 0


def test_figures_of_this_package_are_marked(tmp_path):
    """D1 (second sweep of a folder): fails when save_figure stops writing the PNG Software mark."""
    from dropblock.images import file_is_dropblock_figure
    from dropblock.viz.style import new_figure, save_figure

    fig = new_figure((1, 1))
    save_figure(fig, tmp_path / "f.png")
    assert load_image(tmp_path / "f.png").dropblock_figure and file_is_dropblock_figure(tmp_path / "f.png")
    assert not load_image(SAMPLES / "coffee.jpg").dropblock_figure
    assert not file_is_dropblock_figure(SAMPLES / "coffee.jpg") and not file_is_dropblock_figure(tmp_path)
