"""dropblock.models.preprocessing: timm's crop modes and overrides (the built-ins' own are in test_models.py)."""

import numpy as np
import pytest
from PIL import Image

from dropblock.models.preprocessing import IMAGENET, Preprocessing, preprocess, resize_and_crop

BILINEAR = Image.Resampling.BILINEAR


def image(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_squash_scales_both_sides():
    img = image(400, 600)
    got = resize_and_crop(img, 256, 224, BILINEAR, "squash")
    want = np.asarray(Image.fromarray(img).resize((256, 256), BILINEAR))[16:240, 16:240]
    assert np.array_equal(got, want)


def test_border_fits_the_long_side_and_pads_with_the_fill():
    img = image(400, 600)  # long side 600 -> 256, short 400 -> round(170.67) = 171
    got = resize_and_crop(img, 256, 224, BILINEAR, "border", fill=(1, 2, 3))
    small = np.asarray(Image.fromarray(img).resize((256, 171), BILINEAR))
    canvas = np.empty((224, 256, 3), np.uint8)
    canvas[:] = (1, 2, 3)
    canvas[26:197] = small  # (224 - 171) // 2 = 26 rows above
    assert np.array_equal(got, canvas[:, 16:240])


def test_border_fill_is_the_mean_colour():
    prep = Preprocessing(224, 224, BILINEAR, 255.0, (0.5, 0.25, 0.0), (1.0, 1.0, 1.0), "border")
    _, crop = preprocess(prep, image(100, 300))
    assert tuple(crop[0, 0]) == (128, 64, 0)  # round(255 * mean)


def test_overrides_keep_the_resize_ratio_and_units():
    prep = IMAGENET
    assert (prep.resize, prep.crop) == (256, 224)
    bigger = prep.with_overrides(input_size=320)
    assert (bigger.resize, bigger.crop) == (365, 320)
    assert prep.with_overrides(mean=[0, 0.5, 1]).mean == (0.0, 0.5, 1.0)
    for bad in ({"input_size": 2.5}, {"input_size": True}, {"mean": (1, 2)},
                {"std": (1, 1, float("nan"))}, {"mean": "abc"}):
        with pytest.raises(ValueError):
            prep.with_overrides(**bad)


def test_preprocess_takes_names_specs_and_loaded_models():
    img = image(50, 70)
    x, _ = preprocess(IMAGENET.with_overrides(32), img)
    assert x.shape == (1, 3, 32, 32)
    with pytest.raises(TypeError, match="expected a model name"):
        preprocess(3, img)
