import numpy as np
import pytest
import torch

from dropblock.conventions import CONVENTIONS, convention_drop_rates, convention_rates
from dropblock.measure import measure_function
from integration import require
from reference_impls import REFERENCES
from stats import assert_can_see_bias, assert_close_se

SETTINGS = [  # (h, w, p, b)
    (14, 14, 0.1, 7),
    (14, 14, 0.3, 4),
    (10, 16, 0.2, 3),
    (16, 10, 0.2, 3),
    (9, 9, 0.1, 11),
    (7, 7, 0.15, 7),
]


def measured(name, h, w, p, b, expected):
    """Mean drop rate and its standard error, with enough masks to resolve a 2% bias."""
    gen = torch.Generator().manual_seed(1234)

    def draw(n):
        return (~REFERENCES[name](n, h, w, p, b, gen)).float().reshape(n, -1).mean(dim=1).double()

    rates = [draw(20000)]
    std = rates[0].std().item()
    needed = int((4.5 * std / (0.02 * expected)) ** 2) + 1
    while sum(len(r) for r in rates) < needed:
        rates.append(draw(100000))
    rates = torch.cat(rates)
    return rates.mean().item(), rates.std().item() / np.sqrt(len(rates))


@pytest.mark.parametrize("h,w,p,b", SETTINGS)
@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_closed_form_matches_a_dense_restatement_of_the_algorithm(name, h, w, p, b):
    rate = CONVENTIONS[name](p, b, h, w)
    if rate.drop_rate is None:
        assert rate.note
        return
    mean, se = measured(name, h, w, p, b, rate.drop_rate)
    assert_can_see_bias(rate.drop_rate, se)
    assert_close_se(mean, rate.drop_rate, se, what=f"{name} {h}x{w} b={b}")


def test_refusals_are_explained():
    rates = {r.name: r for r in convention_rates(0.1, 4, 14, 14)}
    assert rates["torchvision"].drop_rate is None and "even" in rates["torchvision"].note
    assert convention_drop_rates(0.1, 7, 28, 14)["tf"] is None
    assert convention_drop_rates(0.1, 15, 14, 14)["keras_cv"] is None


def test_the_notes_claims_hold():
    # timm over-drops near the map's size; keras-cv is wrong when H != W; torchvision = tf on square maps
    r = convention_drop_rates(0.1, 7, 14)
    assert r["torchvision"] == pytest.approx(0.0929, abs=1e-4)
    assert r["tf"] == pytest.approx(r["torchvision"], rel=1e-12)
    assert convention_drop_rates(0.1, 13, 14)["timm"] > 0.3
    wide = convention_drop_rates(0.1, 3, 10, 20)
    tall = convention_drop_rates(0.1, 3, 20, 10)
    assert wide["keras_cv"] != pytest.approx(tall["keras_cv"], rel=0.05)


def measure_sharply(fn, p, b, h, w, expected):
    """measure_function with enough masks (from a pilot's spread) to resolve a 2% bias."""
    pilot = measure_function(fn, p, b, h, w, samples=20000, seed=2)
    needed = int(pilot.n * (4.5 * pilot.se / (0.02 * expected)) ** 2) + 1
    return measure_function(fn, p, b, h, w, samples=max(needed, 20000), seed=3)


def _try_import(path):
    """The function at MODULE:ATTR; skips (fails under DROPBLOCK_REQUIRE_INTEGRATION=1) without its package."""
    module, _, attr = path.partition(":")
    return getattr(require(module), attr)


@pytest.mark.parametrize("h,w,p,b", [(14, 14, 0.1, 7), (14, 14, 0.2, 3), (20, 12, 0.15, 5), (9, 9, 0.1, 9)])
def test_torchvision_model_matches_the_real_function(h, w, p, b):
    fn = _try_import("torchvision.ops:drop_block2d")
    expected = convention_drop_rates(p, b, h, w)["torchvision"]
    m = measure_sharply(fn, p, b, h, w, expected)
    assert_can_see_bias(expected, m.se)
    assert_close_se(m.mean, expected, m.se, what="torchvision")


@pytest.mark.parametrize("h,w,p,b", [(14, 14, 0.1, 7), (14, 14, 0.1, 13), (14, 14, 0.2, 4), (20, 12, 0.15, 5)])
def test_timm_model_matches_the_real_function(h, w, p, b):
    fn = _try_import("timm.layers:drop_block_2d")
    import inspect
    if "couple_channels" not in inspect.signature(fn).parameters:
        pytest.skip("timm older than 1.0.23 (a different algorithm)")
    expected = convention_drop_rates(p, b, h, w)["timm"]
    m = measure_sharply(fn, p, b, h, w, expected)
    assert_can_see_bias(expected, m.se)
    assert_close_se(m.mean, expected, m.se, what="timm")
