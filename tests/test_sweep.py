"""dropblock.sweep: the per-image engine (masks, seeds, rows), the summary across images, finding images.

The pretrained EfficientNet-Lite0 is loaded once for the module; every draw uses a fixed seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SAMPLES, pretrained_one_thread
from dropblock.effect import apply_mask, kl_divergence, mask_scale
from dropblock.methods import draw_mask
from dropblock.models import forward_many, preprocess
from dropblock.stats import MeanSE
from dropblock.sweep import (
    ImageRow, Setting, content_id, find_images, point_json, setting_seed, settings_grid, summarize,
)
from dropblock.sweep_engine import sweep_image

MODEL, LAYER = "efficientnet-lite0", "blocks.8"
PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")


@pytest.fixture(scope="module")
def model():
    yield from pretrained_one_thread(MODEL)


def _photo(name: str) -> tuple[np.ndarray, str]:
    with Image.open(SAMPLES / name) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8), content_id(SAMPLES / name)


def _sweep(model, name, settings, **kw):
    pixels, content = _photo(name)
    kw = dict(masks=4, seed=0, content=content, name=name) | kw
    return sweep_image(model, pixels, LAYER, settings, **kw)


# --- settings and seeds -----------------------------------------------------------------------

def test_settings_grid_gives_dropblock_one_line_per_block_size():
    grid = settings_grid(["dropout", "dropblock"], [1, 7], [1.0, 0.9])
    assert grid == [Setting("dropout", None, 1.0), Setting("dropout", None, 0.9),
                    Setting("dropblock", 1, 1.0), Setting("dropblock", 1, 0.9),
                    Setting("dropblock", 7, 1.0), Setting("dropblock", 7, 0.9)]
    for bad, match in (((["drop"], [1], [0.9]), "method"), ((["dropblock"], [0], [0.9]), "block_size"),
                       ((["dropout"], [1], [0.0]), "keep_prob"), ((["dropout"], [1], [1.5]), "keep_prob"),
                       (([], [1], [0.9]), "at least one")):
        with pytest.raises(ValueError, match=match):
            settings_grid(*bad)


def test_seeds_come_from_the_run_seed_the_image_content_and_the_setting(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "sub" / "b.bin"
    b.parent.mkdir()
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    assert content_id(a) == content_id(b)  # where the file lies does not matter
    s = Setting("dropblock", 7, 0.9)
    base = setting_seed(0, content_id(a), s)
    assert base == setting_seed(0, content_id(b), s) and 0 <= base < 2 ** 63
    others = {setting_seed(1, content_id(a), s), setting_seed(0, "other", s),
              setting_seed(0, content_id(a), Setting("dropblock", 5, 0.9)),
              setting_seed(0, content_id(a), Setting("dropblock", 7, 0.8)),
              setting_seed(0, content_id(a), Setting("dropout", None, 0.9))}
    assert base not in others and len(others) == 5


# --- one image ------------------------------------------------------------------------------------

def test_keep_prob_one_is_the_clean_network_for_every_method(model):
    settings = settings_grid(["dropblock", "dropout", "spatial-dropout", "cutout"], [1, 7], [1.0])
    rows = _sweep(model, "coffee.jpg", settings, masks=3, label=967)
    assert [r.setting for r in rows] == settings
    for r in rows:
        assert (r.kl, r.agreement, r.drop_rate, r.accuracy, r.masks) == (0.0, 1.0, 0.0, 1.0, 3)
    # ... which is what passes with masks that drop nothing would give, within float noise
    x, _ = preprocess(MODEL, _photo("coffee.jpg")[0])
    run = forward_many(model, x, LAYER, [lambda f: f] * 3)
    assert float(kl_divergence(run.logits_before.expand_as(run.logits_after), run.logits_after).max()) < 1e-9
    assert (run.logits_after.argmax(-1) == 967).all()


def test_a_row_is_the_mean_over_masks_drawn_from_the_settings_own_seed(model):
    """Each mask is drawn from the setting's generator and applied as training would; the row's
    values are the means over those masks (checked against a one-at-a-time re-run)."""
    s = Setting("dropblock", 3, 0.8)
    pixels, content = _photo("chelsea.jpg")
    (row,) = sweep_image(model, pixels, LAYER, [s], masks=3, seed=5, content=content, name="c",
                         gamma="exact", label=281)
    gen = torch.Generator().manual_seed(setting_seed(5, content, s))
    x, _ = preprocess(MODEL, pixels)
    kls, rates, top1 = [], [], []
    for _ in range(3):
        draw = draw_mask("dropblock", (1, 112, 14, 14), 0.2, block_size=3, gamma="exact", generator=gen)
        run = forward_many(model, x, LAYER, [lambda f: apply_mask(f, draw.keep, mask_scale("dropblock", draw.keep, 0.2))])
        kls.append(float(kl_divergence(run.logits_before, run.logits_after)))
        rates.append(draw.drop_rate)
        top1.append(int(run.logits_after.argmax()))
        clean = int(run.logits_before.argmax())
    assert row.drop_rate == pytest.approx(np.mean(rates), abs=1e-12)
    assert row.kl == pytest.approx(np.mean(kls), rel=1e-4, abs=1e-7)
    assert row.agreement == np.mean([t == clean for t in top1])
    assert row.accuracy == np.mean([t == 281 for t in top1])
    assert 0.1 < row.drop_rate < 0.3 and row.kl > 0


def test_rows_do_not_depend_on_the_other_settings_or_the_batch_size(model):
    """What makes a resumed run equal an uninterrupted one: a setting's masks come from its own seed."""
    grid = settings_grid(["dropblock", "cutout"], [1, 5], [0.9, 0.75])
    full = _sweep(model, "coffee.jpg", grid, batch_size=5)
    part = _sweep(model, "coffee.jpg", grid[2:4][::-1], batch_size=3)
    for row in part:
        same = next(r for r in full if r.setting == row.setting)
        assert row.drop_rate == same.drop_rate and row.agreement == same.agreement
        assert row.kl == pytest.approx(same.kl, rel=1e-5, abs=1e-9)
    calls = []
    _sweep(model, "coffee.jpg", grid, progress=calls.append)
    assert sum(calls) == len(grid) * 4


def test_larger_blocks_move_the_prediction_more_figure_5(model):
    """The paper's Figure 5 on the sample photos: at blocks.8 and keep_prob 0.7, the mean KL with block 7
    is above the mean KL with block 1. Both settings are measured on the same photos, so the margin is
    the standard error of the per-photo differences (each photo's mean over its masks, then the SE
    across photos: it counts both). Gamma "exact" gives both block sizes the same expected drop rate."""
    settings = [Setting("dropblock", 1, 0.7), Setting("dropblock", 7, 0.7)]
    rows = [r for name in PHOTOS for r in _sweep(model, name, settings, masks=16, gamma="exact")]
    points = summarize(rows, settings)
    assert [p.images for p in points] == [3, 3] and points[0].masks == 48
    assert abs(points[0].drop_rate.mean - points[1].drop_rate.mean) < 0.02
    diffs = [b.kl - a.kl for a, b in zip(rows[::2], rows[1::2])]
    paired = MeanSE.of(diffs)
    assert points[1].kl.mean - points[0].kl.mean == pytest.approx(paired.mean)
    assert paired.mean > 2 * paired.se > 0, diffs
    assert min(diffs) > 0  # on every photo


def test_bad_arguments(model):
    s = [Setting("dropblock", 7, 0.9)]
    with pytest.raises(ValueError, match="masks"):
        _sweep(model, "coffee.jpg", s, masks=0)
    with pytest.raises(ValueError, match="method"):
        _sweep(model, "coffee.jpg", [Setting("drop", None, 0.9)])
    with pytest.raises(ValueError, match="block_size"):
        _sweep(model, "coffee.jpg", [Setting("dropout", 3, 0.9)])


# --- across images -------------------------------------------------------------------------------

def _row(image, kl, agreement=1.0, accuracy=None, setting=Setting("dropout", None, 0.9)):
    return ImageRow(image, "blocks.8", setting, 4, 0.1, kl, agreement, accuracy)


def test_summary_averages_masks_within_images_then_takes_the_se_across_images():
    other = Setting("dropblock", 7, 0.9)
    rows = [_row("a", 0.1, 0.5, 1.0), _row("b", 0.3, 1.0), _row("c", 0.2, 0.75, 0.0), _row("a", 9.9),
            _row("a", 0.4, setting=other)]
    points = summarize(rows, [other, Setting("dropout", None, 0.9)])
    assert [p.setting for p in points] == [other, Setting("dropout", None, 0.9)]
    single, three = points
    assert three.images == 3 and three.masks == 12  # the repeated ("a", dropout) row counts once
    assert three.kl.mean == pytest.approx(0.2)
    assert three.kl.se == pytest.approx(np.std([0.1, 0.3, 0.2], ddof=1) / math.sqrt(3))
    assert three.accuracy.mean == 0.5 and three.accuracy.n == 2  # the labelled images only
    j = point_json(three)
    assert j == {"layer": "blocks.8", "method": "dropout", "block_size": None, "keep_prob": 0.9, "images": 3, "masks": 12,
                 "drop_rate": pytest.approx(0.1), "kl": {"mean": pytest.approx(0.2), "se": three.kl.se},
                 "agreement": {"mean": 0.75, "se": three.agreement.se},
                 "accuracy": {"mean": 0.5, "se": three.accuracy.se, "images": 2}}
    one = point_json(single)  # one image: there is no spread across images to take
    assert one["kl"] == {"mean": 0.4, "se": None} and one["accuracy"] is None and one["block_size"] == 7


# --- finding images --------------------------------------------------------------------------------

def test_find_images_in_files_folders_and_globs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rel in ("d/b.jpg", "d/a.png", "d/sub/c.jpg", "d/.hidden.jpg", "d/.git/x.jpg", "e.jpg", "f.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = find_images(["e.jpg", "d", "*.jpg", "nothing/*.png", "missing.jpg", "d/a.png"])
    assert [str(p) for p in found.paths] == ["e.jpg", "d/a.png", "d/b.jpg", "d/sub/c.jpg"]
    assert found.missing == ["nothing/*.png", "missing.jpg"]
    assert [str(p) for p in find_images(["d/**/*.jpg"]).paths] == ["d/b.jpg", "d/sub/c.jpg"]
