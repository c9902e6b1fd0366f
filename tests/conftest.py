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


@pytest.fixture(params=["c", "fallback"])
def backend(request, monkeypatch) -> str:
    """Run a test with the C helper and again with the NumPy/torch fallback (the C run skips where
    the helper was not compiled)."""
    import dropblock._native as native

    if request.param == "c" and native.blocks is None:
        pytest.skip("dropblock._cblocks was not compiled")
    if request.param == "fallback":
        monkeypatch.setattr(native, "blocks", None)
    return request.param
