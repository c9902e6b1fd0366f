"""dropblock.stats: one mean ± standard error type, from values or from streamed sums."""

import numpy as np
import pytest

from dropblock.stats import MeanSE


def test_of_values_uses_the_sample_standard_deviation():
    assert MeanSE.of([0.25]) == MeanSE(0.25, 0.0, 1)
    s = MeanSE.of([1.0, 2.0, 3.0, 4.0])
    assert (s.mean, s.n) == (2.5, 4) and s.se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert s.as_dict() == {"mean": 2.5, "se": s.se}


def test_from_sums_equals_of_values():
    v = np.random.default_rng(0).random(1000)
    streamed = MeanSE.from_sums(v.size, float(v.sum()), float((v * v).sum()))
    direct = MeanSE.of(v)
    assert streamed.n == direct.n and streamed.mean == pytest.approx(direct.mean, rel=1e-12)
    assert streamed.se == pytest.approx(direct.se, rel=1e-9)


def test_no_values_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        MeanSE.of([])
