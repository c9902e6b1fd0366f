import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


@pytest.fixture
def sample_images() -> Path:
    return SAMPLES


def pretrained_one_thread(name: str = "efficientnet-lite0"):
    """For a module-scoped fixture (``yield from``): the pretrained model, with torch on one intra-op
    thread while the module runs. On a small shared machine, torch's OpenMP threads contend with other
    processes and a batch-1 forward pass can take 40x longer (2 s instead of 0.05 s)."""
    import torch

    from dropblock.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield load_model(name)
    finally:
        torch.set_num_threads(threads)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")


def masked_by_own_draw(x, p: float, b: int, seed: int, rescale: str = "batch"):
    """What drop_block2d(x, p, b, rescale=rescale) must return for a generator seeded with ``seed`` on
    x's device: x times the mask that dropblock_mask draws from the same generator state, scaled
    as ``rescale`` says, computed in float64."""
    import torch

    from dropblock.gamma import expected_drop_rate
    from dropblock.masks import dropblock_mask

    gen = torch.Generator(x.device.type).manual_seed(seed)
    m = dropblock_mask(tuple(x.shape), p, b, device=x.device, generator=gen)
    keep = m.keep.to(torch.float64)
    h, w = x.shape[-2:]
    scale = {"batch": keep.numel() / (1e-6 + float(keep.sum())),
             "expected": 1.0 / (1.0 - expected_drop_rate(m.gamma, b, h, w)), "none": 1.0}[rescale]
    return (x.double() * keep * scale).to(x.dtype)


@pytest.fixture(params=["c", "numpy", "tensor"])
def backend(request, monkeypatch) -> str:
    """Run a test three ways on the CPU: with the C helper (skipped where it was not compiled), with
    the NumPy fallback, and through the tensor code that GPUs take."""
    import dropblock._native as native
    import dropblock.sampling as sampling

    if request.param == "c" and native.blocks is None:
        pytest.skip("dropblock._cblocks was not compiled")
    if request.param != "c":
        monkeypatch.setattr(native, "blocks", None)
    if request.param == "tensor":
        monkeypatch.setattr(sampling, "NUMPY_ON_CPU", False)
    return request.param
