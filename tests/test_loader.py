"""dropblock.loader: images decoded ahead, in worker processes or not, give the same items in the same order;
a bad file is an item with its one line, a dead worker one LoaderError; `sweep --workers` changes nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dropblock.loader import ImageItem, LoaderError, load_images, load_item
from dropblock.sweep import content_id


def photos(folder: Path, count: int, size: tuple[int, int] = (40, 56)) -> list[Path]:
    """``count`` small PNGs of distinct seeded noise (so distinct contents and seeds)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (*size, 3), dtype=np.uint8)
        path = folder / f"img{i:04d}.png"
        Image.fromarray(pixels).save(path)
        out.append(path)
    return out


def mixed(folder: Path) -> list[Path]:
    """Good photos with a truncated file, a text file and a figure dropblock made among them."""
    paths = photos(folder, 4)
    broken = folder / "broken.png"
    broken.write_bytes(paths[0].read_bytes()[:60])
    text = folder / "notes.png"
    text.write_text("not an image")
    figure = folder / "figure.png"
    info = PngInfo()
    info.add_text("Software", "dropblock 0.1.0")
    Image.new("RGB", (30, 30)).save(figure, pnginfo=info)
    return [paths[0], broken, paths[1], text, figure, paths[2], paths[3]]


def same(a: ImageItem, b: ImageItem) -> bool:
    return (a.path, a.content, a.error) == (b.path, b.content, b.error) and (
        (a.pixels is None and b.pixels is None) or np.array_equal(a.pixels, b.pixels))


def test_an_item_is_the_files_content_pixels_or_one_line(tmp_path):
    """Breaks if the content id stops being the file's SHA-256 (seeds would change), or a bad file raises."""
    paths = mixed(tmp_path)
    good = load_item(paths[0])
    assert good.error is None and good.content == content_id(paths[0])
    assert good.pixels.shape == (40, 56, 3) and good.pixels.dtype == np.uint8
    assert np.array_equal(good.pixels, np.asarray(Image.open(paths[0]).convert("RGB")))
    for bad, words in ((paths[1], "broken.png"), (paths[3], "notes.png"), (paths[4], "a figure dropblock made")):
        item = load_item(bad)
        assert item.pixels is None and item.content is None and words in item.error and "\n" not in item.error
    assert "no such file" in load_item(tmp_path / "missing.png").error.lower()


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_give_the_same_items_in_the_same_order(tmp_path, workers, recwarn):
    """Breaks if the DataLoader reorders items (in_order), batches or converts them (collate), or drops the
    bad ones."""
    paths = mixed(tmp_path)
    here = list(load_images(paths))
    ahead = list(load_images(paths, workers=workers, prefetch=1))
    assert len(here) == len(ahead) == len(paths)
    assert [i.path for i in ahead] == paths
    assert all(same(a, b) for a, b in zip(here, ahead))
    assert [i.error is None for i in ahead] == [True, False, True, False, False, True, True]
    assert isinstance(ahead[0].pixels, np.ndarray)  # not a tensor: the collate is the identity
    assert not [w for w in recwarn if "DataLoader" in str(w.message)]  # no multi-line warning on the CLI's stderr


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="workers"):
        load_images([], workers=-1)
    with pytest.raises(ValueError, match="workers"):
        load_images([], workers=True)
    with pytest.raises(ValueError, match="prefetch"):
        load_images([], workers=1, prefetch=0)
    assert list(load_images([], workers=2)) == []


def _dies_on_second(path, short_side=None):
    if Path(path).name == "img0001.png":
        os.kill(os.getpid(), signal.SIGKILL)
    return load_item(path, short_side)


def test_a_worker_that_dies_is_one_loader_error(tmp_path, monkeypatch):
    """A killed worker process (out of memory, a decoder crash) is LoaderError with one line, not a hang or
    torch's multi-line RuntimeError. Breaks without the RuntimeError -> LoaderError translation."""
    import dropblock.loader as loader

    paths = photos(tmp_path, 3)
    monkeypatch.setattr(loader, "load_item", _dies_on_second)  # the workers are forked: they see it too
    with pytest.raises(LoaderError, match="worker process failed") as info:
        list(load_images(paths, workers=1))
    assert "\n" not in str(info.value)


def test_sweep_with_workers_writes_the_same_csv(tmp_path, code_dir):
    """`sweep --workers 2` against `--workers 0`: the same rows, byte for byte (an item depends on its file
    only), and the bad files skipped with the same warnings. Breaks if the loop pairs an image's pixels with
    another image's name or seeds, or loses the skipped files."""
    from clirun import run

    folder = tmp_path / "photos"
    mixed(folder)
    args = ["--model", f"{code_dir / 'tinynet.py'}:build", "--input-size", "64", "--layer", "block",
            "--keep-probs", "1,0.8", "--block-sizes", "1,3", "--methods", "dropblock,dropout", "-n", "2"]
    outputs = {}
    for workers in (0, 2):
        csv = tmp_path / f"w{workers}.csv"
        r = run("sweep", folder, *args, "--workers", workers, "--csv", csv, "-o", tmp_path / f"w{workers}.png")
        assert r.exit_code == 0, r.output
        assert r.stderr.count("warning: skipped") == 3, r.stderr
        outputs[workers] = csv.read_text()
    assert outputs[0] == outputs[2]
    assert len(outputs[0].splitlines()) == 3 + 4 * 6  # '#' lines, header, 4 photos x 6 settings
    r = run("sweep", folder, *args, "--workers", "-1")
    assert r.exit_code == 2 and "--workers must be >= 0" in r.stderr
