"""The optional C helper dropblock._cblocks: built here, the same answers as the fallback, safe on bad input."""

import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

import dropblock._native as native
from dropblock.masks import block_corners

needs_native = pytest.mark.skipif(native.blocks is None, reason="dropblock._cblocks was not compiled")
CPU = torch.device("cpu")


def test_the_helper_is_built_where_a_compiler_and_python_headers_exist():
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if not (headers and (shutil.which("cc") or shutil.which("gcc"))):
        pytest.skip("no C compiler or Python headers here: the fallback is expected")
    assert native.blocks is not None, "pip install should have compiled dropblock/_cblocks.c"


@pytest.mark.parametrize("shape,b,gamma", [((3, 5, 14, 14), 7, 0.02), ((2, 3, 9, 130), 3, 0.05),
                                           ((4, 6, 7, 7), 7, 0.3), ((2, 2, 12, 10), 1, 0.1)])
@needs_native
def test_c_and_numpy_draw_the_same_corners_from_the_same_generator(monkeypatch, shape, b, gamma):
    n, c, h, w = shape
    draw = lambda: block_corners(n * c, h, w, min(b, h), min(b, w), gamma, device=CPU,  # noqa: E731
                                 generator=torch.Generator().manual_seed(11))
    monkeypatch.setenv("DROPBLOCK_BACKEND", "c")
    with_c = draw()
    monkeypatch.setenv("DROPBLOCK_BACKEND", "numpy")
    assert np.array_equal(with_c, draw())


@needs_native
def test_many_chunks_give_the_same_draw_in_both_backends(monkeypatch):
    import dropblock.sampling as sampling

    monkeypatch.setattr(sampling, "_draw_size", lambda left, gamma: 4)
    draw = lambda: block_corners(40, 11, 9, 4, 3, 0.07, device=CPU, generator=torch.Generator().manual_seed(2))  # noqa: E731
    monkeypatch.setenv("DROPBLOCK_BACKEND", "c")
    with_c = draw()
    monkeypatch.setenv("DROPBLOCK_BACKEND", "numpy")
    assert len(with_c) > 8 and np.array_equal(with_c, draw())


@needs_native
def test_zero_blocks_refuses_a_block_past_the_end_and_writes_nothing():
    t = torch.ones(50)
    with pytest.raises(ValueError, match="runs past"):
        native.blocks.zero_blocks(t.data_ptr(), 4, 50, np.array([0, 45], dtype=np.int64), 10, 1, 6)
    with pytest.raises(ValueError, match="runs past"):
        native.blocks.zero_blocks(t.data_ptr(), 4, 50, np.array([-1], dtype=np.int64), 10, 1, 1)
    assert torch.equal(t, torch.ones(50))


@needs_native
def test_the_helper_checks_its_arrays():
    with pytest.raises(TypeError, match="int64"):
        native.blocks.union_size(np.array([1.0, 2.0]), 5, 5, 2, 2)
    with pytest.raises(TypeError, match="float64"):
        native.blocks.gaps_to_corners(np.zeros(3, np.int64), np.zeros(3, np.int64), -1.0, 0, 10, 1, 10, 1, 1)
    with pytest.raises(ValueError, match="runs past"):
        native.blocks.union_size(np.array([0, 23], dtype=np.int64), 5, 5, 2, 2)  # (4, 3) with a 2-high block
    with pytest.raises(ValueError):
        native.blocks.union_size(np.array([0, 1], dtype=np.int64), 5, 5, 6, 2)
    with pytest.raises(ValueError, match="sorted"):  # unsorted corners in one plane are refused, not miscounted
        native.blocks.union_size(np.array([12, 0], dtype=np.int64), 5, 5, 2, 2)


@needs_native
def test_gaps_to_corners_stops_at_n_and_says_where_it_stopped():
    out = np.empty(4, dtype=np.int64)
    per_log = 1 / np.log1p(-0.5)
    log_u = np.log(np.array([0.9, 0.9, 0.9, 0.9]))  # each gap floor(log 0.9 / log 0.5) = 0: positions 0, 1, 2, 3
    assert native.blocks.gaps_to_corners(log_u, out, per_log, 0, 10, 1, 10, 1, 1) == (4, 4)
    assert out.tolist() == [0, 1, 2, 3]
    assert native.blocks.gaps_to_corners(log_u, out, per_log, 8, 10, 1, 10, 1, 1) == (2, 10)
    assert out[:2].tolist() == [8, 9]
    inf = np.array([-np.inf, 0.0])  # U = 0: an infinite gap ends the draw
    assert native.blocks.gaps_to_corners(inf, out, per_log, 0, 10, 1, 10, 1, 1) == (0, 10)
