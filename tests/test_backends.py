"""DROPBLOCK_BACKEND: the one switch between the Triton kernels and the seed-list paths."""

import pytest
import torch

import dropblock._native as native
from dropblock import backends

CPU, META = torch.device("cpu"), torch.device("meta")


def test_auto_picks_the_c_helper_or_numpy_on_the_cpu(monkeypatch):
    monkeypatch.delenv("DROPBLOCK_BACKEND", raising=False)
    assert backends.for_device(CPU) == ("c" if native.blocks is not None else "numpy")
    monkeypatch.setenv("DROPBLOCK_BACKEND", "")
    assert backends.requested() == "auto"


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_a_forced_backend_is_used(monkeypatch, name):
    monkeypatch.setenv("DROPBLOCK_BACKEND", name)
    assert backends.for_device(CPU) == backends.seeds_backend(CPU) == name


def test_triton_draws_no_seed_lists(monkeypatch):
    """Masks and figures need seed lists; where Triton runs, torch draws them."""
    monkeypatch.setenv("DROPBLOCK_BACKEND", "triton")
    assert backends.seeds_backend(CPU) == "torch"
    monkeypatch.setenv("DROPBLOCK_BACKEND", "auto")
    assert backends.seeds_backend(META) == "torch"


def test_a_bad_name_is_a_value_error_quoting_it(monkeypatch):
    monkeypatch.setenv("DROPBLOCK_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"^DROPBLOCK_BACKEND must be one of auto, triton, torch, c, numpy; got 'cuda'"):
        backends.for_device(CPU)


@pytest.mark.parametrize("name", ["c", "numpy"])
def test_cpu_only_backends_refuse_other_devices(monkeypatch, name):
    monkeypatch.setenv("DROPBLOCK_BACKEND", name)
    with pytest.raises(RuntimeError, match=f"DROPBLOCK_BACKEND={name} runs on CPU tensors only"):
        backends.for_device(META)


def test_c_is_refused_where_it_was_not_compiled(monkeypatch):
    monkeypatch.setenv("DROPBLOCK_BACKEND", "c")
    monkeypatch.setattr(native, "blocks", None)
    with pytest.raises(RuntimeError, match="was not compiled here; use numpy"):
        backends.for_device(CPU)


def test_triton_on_the_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("DROPBLOCK_BACKEND", "triton")
    if not backends.triton_imports():
        with pytest.raises(RuntimeError, match="triton does not import"):
            backends.for_device(CPU)
        return
    from dropblock import _triton

    monkeypatch.setattr(_triton, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        backends.for_device(CPU)
