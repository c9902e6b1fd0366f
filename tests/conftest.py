import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
CUDA = torch.cuda.is_available()
if not CUDA:  # Triton's kernels run in its interpreter on CPU tensors (read when dropblock._triton is imported)
    os.environ.setdefault("TRITON_INTERPRET", "1")


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
    return CUDA


needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def triton_device() -> str | None:
    """Where the Triton kernels run in this session: "cuda", "cpu" (the interpreter) or None."""
    from dropblock import backends

    for device in ("cuda", "cpu"):
        if (device == "cpu" or CUDA) and backends.triton_runs_on(torch.device(device)):
            return device
    return None


SEED_LISTS = ["c", "numpy", "torch", pytest.param("cuda", marks=needs_cuda)]


@pytest.fixture(params=SEED_LISTS)
def backend(request, monkeypatch) -> torch.device:
    """The code path a test runs (DROPBLOCK_BACKEND); returns the device to put tensors on.

    By default every seed-list path: the C helper (skipped where it was not compiled), NumPy and torch
    ops on the CPU, and torch on CUDA where a GPU exists. "triton" (through ON_TRITON or EVERY_PATH)
    runs the Triton kernels: on CUDA where present, else on CPU tensors in Triton's interpreter."""
    import dropblock._native as native

    name = request.param
    if name == "triton":
        device = triton_device()
        if device is None:
            pytest.skip("triton is not installed (or cannot run here)")
        monkeypatch.setenv("DROPBLOCK_BACKEND", "triton")
        return torch.device(device)
    if name == "c" and native.blocks is None:
        pytest.skip("dropblock._cblocks was not compiled")
    monkeypatch.setenv("DROPBLOCK_BACKEND", "torch" if name == "cuda" else name)
    return torch.device("cuda" if name == "cuda" else "cpu")


ON_TRITON = pytest.mark.parametrize("backend", ["triton"], indirect=True)
EVERY_PATH = pytest.mark.parametrize("backend", SEED_LISTS + ["triton"], indirect=True)


def masked_by_own_draw(x, p: float, b: int, seed: int, rescale: str = "batch"):
    """What drop_block2d(x, p, b, rescale=rescale) must return for a generator seeded with ``seed`` on
    x's device: x times the mask that dropblock_mask draws from the same generator state, scaled
    as ``rescale`` says, computed in float64."""
    from dropblock.gamma import expected_drop_rate
    from dropblock.masks import dropblock_mask

    gen = torch.Generator(x.device.type).manual_seed(seed)
    m = dropblock_mask(tuple(x.shape), p, b, device=x.device, generator=gen)
    keep = m.keep.to(torch.float64)
    h, w = x.shape[-2:]
    scale = {"batch": keep.numel() / (1e-6 + float(keep.sum())),
             "expected": 1.0 / (1.0 - expected_drop_rate(m.gamma, b, h, w)), "none": 1.0}[rescale]
    return (x.double() * keep * scale).to(x.dtype)


def assert_blocks_of_valid_seeds(dropped: torch.Tensor, bh: int, bw: int) -> None:
    """Every dropped unit of ``dropped`` (..., H, W) bool lies in a wholly dropped bh x bw block whose
    top-left corner is a valid seed position (r <= H - bh, c <= W - bw), and those blocks cover
    nothing else."""
    import torch.nn.functional as F

    d = dropped.reshape(-1, 1, *dropped.shape[-2:]).to(torch.float32).cpu()
    whole = -F.max_pool2d(-d, (bh, bw), stride=1)  # (H - bh + 1, W - bw + 1): 1 where the block is all dropped
    covered = F.max_pool2d(F.pad(whole, (bw - 1, bw - 1, bh - 1, bh - 1)), (bh, bw), stride=1)
    assert torch.equal(covered, d), "some dropped units lie in no wholly dropped block of a valid seed"


def scale_of_draw(y: torch.Tensor, p: float, b: int, rescale: str, shared: bool, gamma="paper", eps=1e-6):
    """The scale each sample's kept units must carry (a number, or (N, 1, 1, 1) for "sample"), from
    the draw's own kept units (y != 0; counted on one channel when the mask is shared)."""
    from dropblock._plan import make_plan

    n, c, h, w = y.shape
    keep = (y != 0)[:, :1] if shared else (y != 0)
    if rescale == "batch":
        return keep.numel() / (eps + keep.sum().item())
    if rescale == "sample":
        return (keep[0].numel() / (eps + keep.sum(dim=(1, 2, 3), dtype=torch.float64))).view(n, 1, 1, 1)
    return make_plan(p, b, h, w, gamma, eps).scale(rescale)


def assert_kept_units_scaled(y: torch.Tensor, x: torch.Tensor, scale) -> None:
    """Units of y that are not 0 equal x * scale, within two roundings of y's dtype (the scale's and
    the product's). ``scale``: a number or a tensor broadcastable to x (one per sample)."""
    expect = x.to(torch.float64) * torch.as_tensor(scale, dtype=torch.float64, device=x.device)
    kept = y != 0
    assert kept.any(), "nothing kept: the check would check nothing"
    torch.testing.assert_close(y[kept].to(torch.float64), expect[kept], **_tolerance(y.dtype))


def _tolerance(dtype: torch.dtype) -> dict:
    """Two roundings of ``dtype`` (relative), as assert_close tolerances."""
    return {"rtol": 2 * torch.finfo(dtype).eps, "atol": 0.0}


@pytest.fixture
def code_dir(tmp_path, monkeypatch) -> Path:
    """A folder on ``sys.path`` holding the user model code of :mod:`usercode` (``tinynet.py``)."""
    from usercode import write_code

    write_code(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path
