"""Which code draws and applies DropBlock masks: one switch, ``DROPBLOCK_BACKEND=auto|triton|torch|c|numpy``.

- ``triton``: fused Triton kernels (``dropblock._triton``): CUDA tensors, or CPU tensors when Triton
  runs in its interpreter (``TRITON_INTERPRET=1`` set before dropblock first uses Triton).
- ``torch``: exact Bernoulli seeds drawn and blocks zeroed with torch tensor ops, on any device.
- ``c``: the seeds' integer bookkeeping and the block zeroing in the C helper ``dropblock._cblocks``
  (CPU tensors only; it is compiled at install where a C compiler exists).
- ``numpy``: the same bookkeeping in NumPy (CPU tensors only).

``auto`` (the default): Triton for CUDA tensors where triton imports, else torch; on the CPU the C
helper where it was compiled, else NumPy. c, numpy and torch draw the same masks from the same
generator state, bit for bit; Triton draws its own (Philox in the kernel). The variable is read at
every call, so tests and benchmarks switch it with ``os.environ``.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch

from dropblock.errors import UsageError
from dropblock import _native

ENV = "DROPBLOCK_BACKEND"
BACKENDS = ("auto", "triton", "torch", "c", "numpy")


def requested() -> str:
    """The backend named by ``DROPBLOCK_BACKEND`` ("auto" when unset or empty), or ValueError."""
    name = os.environ.get(ENV) or "auto"
    if name not in BACKENDS:
        raise UsageError(f"{ENV} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


@lru_cache(maxsize=None)
def triton_imports() -> bool:
    """Whether the triton package imports here (asked once, at the first call that could use it)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        importlib.import_module("triton.language")
    except Exception:  # a broken install: fall back to the torch path rather than fail
        return False
    return True


def triton_runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels can run on tensors on ``device``: CUDA where triton is installed;
    the CPU only in Triton's interpreter (TRITON_INTERPRET=1 when ``dropblock._triton`` is first imported)."""
    if not triton_imports():
        return False
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    from dropblock import _triton  # decides compiled or interpreted once, at its import

    return _triton.INTERPRET


def for_device(device: torch.device) -> str:
    """The backend that runs on a tensor on ``device``: "triton", "torch", "c" or "numpy".

    Raises RuntimeError when ``DROPBLOCK_BACKEND`` forces one that cannot run there."""
    name = requested()
    cpu = device.type == "cpu"
    if name == "auto":
        if cpu:
            return "c" if _native.blocks is not None else "numpy"
        return "triton" if device.type == "cuda" and triton_imports() else "torch"
    if name in ("c", "numpy") and not cpu:
        raise RuntimeError(f"{ENV}={name} runs on CPU tensors only, got a tensor on {device}; use torch or triton")
    if name == "c" and _native.blocks is None:
        raise RuntimeError(f"{ENV}=c: the C helper dropblock._cblocks was not compiled here; use numpy")
    if name == "triton" and not triton_runs_on(device):
        why = "triton does not import" if not triton_imports() else (
            "CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before the first use")
        raise RuntimeError(f"{ENV}=triton cannot run on {device}: {why}")
    return name


def seeds_backend(device: torch.device) -> str:
    """The backend that draws seed positions as index lists (masks, figures, the CPU path): "torch",
    "c" or "numpy". Triton never draws lists, so where it would run, torch does."""
    name = requested()
    if name == "triton" or (name == "auto" and device.type != "cpu"):
        return "torch"
    return for_device(device)
