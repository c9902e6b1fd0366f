import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"


@pytest.fixture
def sample_images() -> Path:
    return SAMPLES


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")


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
