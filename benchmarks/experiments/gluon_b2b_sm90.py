"""Can a Gluon kernel chain the residual unit's two GEMMs on Hopper with the first one's
output kept in registers, int8 included? Compiled for sm_90 on a machine with no GPU.

    python benchmarks/experiments/gluon_b2b_sm90.py [--out FILE.json]

Issue 36's next step is a warp-specialized unit kernel in Gluon (benchmarks/results/README.md,
run 12). Before writing it, this answers one question offline: does the k=7 GEMM's [BM, C]
accumulator, dequantized and re-quantized (int8) or rounded (fp16) elementwise, reach the k=1
GEMM's wgmma as its A operand without a round trip through shared memory? A small Gluon
kernel does just that (operands staged by pointer loads into NVMMA shared memory, the two
wgmmas, the result stored by pointer) twice: the intermediate passed in registers (a
DotOperandLayout of the second MMA's layout, via convert_layout) and, for comparison, through
shared memory. PTX counts: st.shared and stmatrix (shared-memory stores; the operands'
staging is the same in both), shfl.sync and prmt (what a register conversion uses). Then the
project's Triton unit kernel's own TTGIR, for whether its k=1 dot already takes the tile from
registers.

Found on the way (Triton 3.9): 8-bit wgmma takes B K-major only (the weights [N, K], permuted
in shared memory) and an instruction N of at most 224 (128 used for 256 channels).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import triton
from triton.experimental import gluon
from triton.experimental.gluon import GluonASTSource
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # sm90_unit, which puts the repository on the path

from sm90_unit import TARGET, compile_unit, cubin_usage  # noqa: E402


@gluon.jit
def b2b_kernel(a_ptr, w1_ptr, w2_ptr, out_ptr, scale, BM: gl.constexpr, C: gl.constexpr, BN2: gl.constexpr,
               INT8: gl.constexpr, IN_REGISTERS: gl.constexpr, num_warps: gl.constexpr):
    dtype: gl.constexpr = a_ptr.dtype.element_ty
    blocked: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    rows = gl.arange(0, BM, layout=gl.SliceLayout(1, blocked))
    k_cols = gl.arange(0, C, layout=gl.SliceLayout(0, blocked))
    n1 = gl.arange(0, C, layout=gl.SliceLayout(1, blocked))
    n2 = gl.arange(0, BN2, layout=gl.SliceLayout(1, blocked))
    # operands staged in shared memory; weights [N, K] (K-major, as 8-bit wgmma needs)
    a = gl.load(a_ptr + rows[:, None] * C + k_cols[None, :])
    w1 = gl.load(w1_ptr + n1[:, None] * C + k_cols[None, :])
    w2 = gl.load(w2_ptr + n2[:, None] * C + k_cols[None, :])
    a_s = gl.allocate_shared_memory(dtype, [BM, C], gl.NVMMASharedLayout.get_default_for([BM, C], dtype), a)
    w1_s = gl.allocate_shared_memory(dtype, [C, C], gl.NVMMASharedLayout.get_default_for([C, C], dtype), w1)
    w2_s = gl.allocate_shared_memory(dtype, [BN2, C], gl.NVMMASharedLayout.get_default_for([BN2, C], dtype), w2)
    fence_async_shared()
    k: gl.constexpr = 256 // dtype.primitive_bitwidth
    n_first: gl.constexpr = 128 if INT8 and C > 128 else C  # 8-bit wgmma: N <= 224
    mma1: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                   instr_shape=[16, n_first, k])
    mma2: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                   instr_shape=[16, BN2, k])
    acc_type: gl.constexpr = gl.int32 if INT8 else gl.float32
    acc = warpgroup_mma(a_s, w1_s.permute((1, 0)), gl.zeros([BM, C], acc_type, layout=mma1))
    v = acc.to(gl.float32) * scale
    if INT8:  # round half to even by the 1.5 * 2^23 trick, as kernels.triton_conv does
        mid = gl.minimum(gl.maximum(v + 12582912.0 - 12582912.0, -128.0), 127.0).to(gl.int8)
    else:
        mid = v.to(gl.float16)
    if IN_REGISTERS:
        a2 = gl.convert_layout(mid, gl.DotOperandLayout(operand_index=0, parent=mma2,
                                                        k_width=32 // dtype.primitive_bitwidth))
    else:
        a2 = gl.allocate_shared_memory(dtype, [BM, C], gl.NVMMASharedLayout.get_default_for([BM, C], dtype), mid)
        fence_async_shared()
    out = warpgroup_mma(a2, w2_s.permute((1, 0)), gl.zeros([BM, BN2], acc_type, layout=mma2))
    o_rows = gl.arange(0, BM, layout=gl.SliceLayout(1, mma2))
    o_cols = gl.arange(0, BN2, layout=gl.SliceLayout(0, mma2))
    gl.store(out_ptr + o_rows[:, None] * BN2 + o_cols[None, :], out.to(gl.float32))


def ptx_counts(ptx: str) -> dict:
    return {"st_shared": len(re.findall(r"\bst\.shared", ptx)), "stmatrix": ptx.count("stmatrix"),
            "shfl": ptx.count("shfl.sync"), "prmt": ptx.count("prmt"), "wgmma": ptx.count("wgmma.mma_async")}


def gluon_rows() -> list[dict]:
    rows = []
    for int8 in (True, False):
        pointer = "*i8" if int8 else "*fp16"
        for bm, c, bn2, warps in ((64, 128, 128, 4), (64, 128, 64, 4), (128, 128, 128, 8), (64, 256, 64, 4)):
            for in_registers in (True, False):
                sig = {"a_ptr": pointer, "w1_ptr": pointer, "w2_ptr": pointer, "out_ptr": "*fp32", "scale": "fp32",
                       **{name: "constexpr" for name in ("BM", "C", "BN2", "INT8", "IN_REGISTERS", "num_warps")}}
                const = {"BM": bm, "C": c, "BN2": bn2, "INT8": int8, "IN_REGISTERS": in_registers, "num_warps": warps}
                compiled = triton.compile(GluonASTSource(b2b_kernel, sig, const), target=TARGET,
                                          options={"num_warps": warps})
                row = {"kind": "int8" if int8 else "fp16", "BMxCxBN2xwarps": f"{bm}x{c}x{bn2}x{warps}",
                       "intermediate": "registers" if in_registers else "shared memory",
                       **ptx_counts(compiled.asm["ptx"]), **cubin_usage(compiled)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def triton_rows() -> list[dict]:
    """The project's unit kernel (the H100 winners at 128 channels): is the k=1 dot's A operand a register tensor?"""
    rows = []
    for tile, int8 in (((128, 64, 64, 8, 3), False), ((128, 128, 128, 4, 3), True)):
        compiled = compile_unit(128, tile, int8)
        dots = re.findall(r"ttng\.warp_group_dot (.*)", compiled.asm["ttgir"])
        row = {"kind": "int8" if int8 else "fp16", "tile": "x".join(map(str, tile)),
               "k1_dots_with_register_A": sum(": tensor<" in d.split("*")[0] for d in dots), "dots": len(dots)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    record = {"triton": triton.__version__, "target": "cuda sm_90", "gluon_b2b": gluon_rows(),
              "triton_unit_kernel": triton_rows()}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
