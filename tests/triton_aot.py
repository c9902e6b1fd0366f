"""Compile dropblock's Triton kernels ahead of time for a Hopper GPU (sm_90), no GPU needed.

    TRITON_INTERPRET=0 python tests/triton_aot.py

Triton's interpreter runs kernels that real GPUs cannot compile, so tests/test_triton.py runs this
too: every variant the launcher can ask for must lower to a cubin, without spilling registers to
local memory. Prints one line per variant: its name, then cuobjdump's resource usage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from dropblock import _triton as T

TARGET = GPUTarget("cuda", 90, 32)
WIDE = ("key",)  # 64-bit arguments
APPLY = [  # (SLOT, WORDS, SCALE, SHARED, PLANAR, I64, dtype)
    (64, True, 0, False, True, False, "fp32"), (0, True, 1, False, True, False, "bf16"),
    (16, True, 2, True, False, False, "fp16"), (0, False, 3, False, False, True, "fp64"),
    (8, True, 1, True, True, False, "fp32"), (0, False, 2, False, False, False, "bf16"),
]
COUNT = [(64, True, False), (0, False, True)]  # (SLOT, WORDS, PER_SAMPLE)


def signature(fn, types: dict, constexprs: dict) -> dict:
    return {name: "constexpr" if name in constexprs else types.get(name, "i64" if name in WIDE else "i32")
            for name in fn.arg_names}


def usage(kernel) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    return next(line.strip() for line in out.splitlines() if "REG:" in line)


def compile_all(lanes: int = 4096) -> list[str]:
    bh, bw = lanes // 64, 64
    lines = []
    for slot, words, scale, shared, planar, i64, dtype in APPLY:
        const = dict(BH=bh, BW=bw, SLOT=slot, WORDS=words, SCALE=scale, SHARED=shared, PLANAR=planar,
                     F64=dtype == "fp64", I64=i64)
        types = {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "kept_ptr": "*fp64" if scale == 3 else "*i64",
                 "scale": "fp32", "eps": "fp32"}
        src = ASTSource(fn=T._apply_kernel, signature=signature(T._apply_kernel, types, const), constexprs=const)
        kernel = triton.compile(src, target=TARGET, options={"num_warps": T.warps(lanes)})
        lines.append(f"apply {const} {dtype}: {usage(kernel)}")
    for slot, words, per_sample in COUNT:
        const = dict(BH=bh, BW=bw, SLOT=slot, WORDS=words, PER_SAMPLE=per_sample)
        src = ASTSource(fn=T._count_kernel, signature=signature(T._count_kernel, {"kept_ptr": "*i64"}, const),
                        constexprs=const)
        kernel = triton.compile(src, target=TARGET, options={"num_warps": T.warps(lanes)})
        lines.append(f"count {const}: {usage(kernel)}")
    return lines


if __name__ == "__main__":
    if T.INTERPRET:
        sys.exit("run with TRITON_INTERPRET=0: the interpreter does not compile")
    print("\n".join(compile_all()))
