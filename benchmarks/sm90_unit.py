"""The residual-unit kernel compiled for sm_90 (the lent H100 / H200) on a machine with no GPU:
registers, spills and shared memory of every tile the tuner tries, before device time is spent.

    python benchmarks/sm90_unit.py [--out FILE.json]

Triton compiles for a target it is given (GPUTarget("cuda", 90, 128)) without a driver; the
cubin's resource use comes from the cuobjdump Triton ships. For each unit tile of
compiled.tune.UNIT_CANDIDATES, both widths of ACE-Step's fused units (128 and 256 channels)
and both kinds (fp16, int8 on int8 operands with an int8 consumer, compiled with
kernels.inflight's rewrite as the GPU launch does): REG (per thread), LOCAL
(bytes of local memory per thread: spills), SHARED (static, bytes) and Triton's dynamic shared
memory. A kernel that needs more than the 227 KiB a Hopper block may use fails on the GPU;
the tuner then records it as failed. A tile that kernels.op.unit_fits refuses for a width (its
accumulator would not fit a thread's registers) is listed with the reason, not compiled.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_engines.compiled.tune import UNIT_CANDIDATES  # noqa: E402
from vae_engines.kernels import inflight as inflight_rewrite  # noqa: E402
from vae_engines.kernels.op import unit_fits  # noqa: E402
from vae_engines.kernels.triton_conv import fused_conv_kernel, tile_flags  # noqa: E402
from vae_engines.kernels.triton_unit import residual_unit_kernel  # noqa: E402

TARGET = GPUTarget("cuda", 90, 128)
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
POINTERS = ("w1_scale_ptr", "b1_ptr", "alpha1_ptr", "inv_beta1_ptr", "w2_scale_ptr", "b2_ptr", "alpha2_ptr",
            "inv_beta2_ptr")


def signature(channels: int, tile: tuple[int, ...], int8: bool, fp8: bool = False,
              inflight: bool = False) -> tuple[dict, dict]:
    """The kernel's signature and constants for one unit width, tile and kind (as op.fused_unit_ launches it;
    fp8: float8 e4m3fn operands where int8 would be, as triton_unit.launch takes them)."""
    bm, bk, bn2, *_ = tile
    t = "fp8e4nv" if fp8 else "i8" if int8 else "fp16"
    sig = {"x_desc": f"tensordesc<{t}[1, {bm}, {bk}]>", "w1_desc": f"tensordesc<{t}[{channels}, {bk}]>",
           "w2_desc": f"tensordesc<{t}[{bn2}, {channels}]>", "y_desc": f"tensordesc<fp16[1, {bm}, {bn2}]>",
           "s_desc": f"tensordesc<{t}[1, {bm}, {bn2}]>", **{name: "*fp32" for name in POINTERS},
           "M": "i32", "DIL": "i32", "x_scale": "fp32", "inv_mid_scale": "fp32", "mid_scale": "fp32",
           "inv_s_scale": "fp32", "res_scale": "fp32"}
    q8 = int8 and not fp8
    const = dict(C=channels, TAPS=7, INT8_1=q8, INT8_2=q8, HAS_B1=True, HAS_B2=True, RES_QUANT=False,
                 STORE_S=True, S_INT8=q8, FAST_SIN=True, BM=bm, BK=bk, BN2=bn2, FP8_1=fp8, FP8_2=fp8, S_FP8=fp8,
                 FP8_ACC=0, INFLIGHT=inflight)
    return {**sig, **{name: "constexpr" for name in const}}, const


def compile_unit(channels: int, tile: tuple[int, ...], int8: bool, fp8: bool = False,
                 inflight: bool = False) -> triton.compiler.CompiledKernel:
    """The unit kernel compiled for sm_90 at one width, tile (BM, BK, BN2, warps, stages) and kind;
    `inflight`: with kernels.inflight's rewrite, as an int8 launch on the GPU compiles it."""
    bm, bk, bn2, warps, stages = tile
    sig, const = signature(channels, (bm, min(bk, channels), min(bn2, channels)), int8, fp8, inflight)
    # every pointer 16-byte aligned, as Triton's launcher specializes a torch tensor's pointer at run time
    aligned = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(sig.values()) if kind.startswith("*")}
    with inflight_rewrite.rewriting(inflight):
        return triton.compile(ASTSource(residual_unit_kernel, sig, const, aligned), target=TARGET,
                              options={"num_warps": warps, "num_stages": stages})


def compile_layer(channels: int, n: int, tile: tuple[int, ...], int8: bool, residual: bool = False,
                  inflight: bool = False, ws: bool = False) -> triton.compiler.CompiledKernel:
    """The layer kernel (kernels.triton_conv) compiled for sm_90: a k=7 layer of `channels` inputs and
    n outputs writing the next layer's input (residual: a k=1 layer adding into the stream), fp16 or int8,
    at tile (BM, BN, BK, warps, stages[, persistent, warp-specialized, registers]) -- of the flags only the
    register cap (ptxas's maxnreg) is compiled here; `inflight` as compile_unit's; `ws`: its K loop with
    Triton's warp_specialize."""
    bm, bn, bk, warps, stages = tile[:5]
    registers = tile_flags(tile)[2]
    t = "i8" if int8 else "fp16"
    sig = {"x_desc": f"tensordesc<{t}[1, {bm}, {bk}]>", "w_desc": f"tensordesc<{t}[{bn}, {bk}]>",
           "y_desc": f"tensordesc<fp16[1, {bm}, {bn}]>", "s_desc": f"tensordesc<{t}[1, {bm}, {bn}]>",
           **{name: "*fp32" for name in ("w_scale_ptr", "bias_ptr", "alpha_ptr", "inv_beta_ptr")},
           **{name: "i32" for name in ("M", "N", "C_IN", "TAPS", "DIL", "PAD", "N_HALF", "N_CH")},
           **{name: "fp32" for name in ("x_scale", "inv_s_scale", "res_scale")}}
    const = dict(INT8_IN=int8, FP8_IN=False, HAS_BIAS=True, RESIDUAL=residual, RES_QUANT=False, STORE_Y=residual,
                 AUDIO=False, STORE_S=True, S_INT8=int8, S_FP8=False, FP8_ACC=0, TRANSPOSED=False, FAST_SIN=True,
                 BM=bm, BN=bn, BK=bk, PERSISTENT=False, WS=ws, INFLIGHT=inflight)
    sig = {**sig, **{name: "constexpr" for name in const}}
    aligned = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(sig.values()) if kind.startswith("*")}
    with inflight_rewrite.rewriting(inflight):
        return triton.compile(ASTSource(fused_conv_kernel, sig, const, aligned), target=TARGET,
                              options={"num_warps": warps, "num_stages": stages, **({"maxnreg": registers}
                                                                                   if registers else {})})


def cuobjdump(compiled: triton.compiler.CompiledKernel, flag: str) -> str:
    """cuobjdump's output for a compiled kernel's cubin (`--dump-resource-usage`, `-sass`)."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        return subprocess.run([str(CUOBJDUMP), flag, str(cubin)], capture_output=True, text=True, check=True).stdout


SASS_OPCODE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")


def sass_opcodes(compiled: triton.compiler.CompiledKernel) -> collections.Counter:
    """Each machine instruction's opcode (without its modifiers: STL.64 is STL), counted once."""
    return collections.Counter(m.group(1) for m in map(SASS_OPCODE.search, cuobjdump(compiled, "-sass").splitlines())
                               if m)


def cubin_usage(compiled: triton.compiler.CompiledKernel) -> dict:
    """A compiled kernel's registers, local memory and stack per thread (cuobjdump) and dynamic shared memory."""
    usage = cuobjdump(compiled, "--dump-resource-usage")
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    return {"registers": int(fields["REG"]), "local_bytes": int(fields["LOCAL"]), "stack_bytes": int(fields["STACK"]),
            "dynamic_shared_bytes": compiled.metadata.shared}


def resources(channels: int, tile: tuple[int, ...], int8: bool) -> dict:
    try:
        compiled = compile_unit(channels, tile, int8, inflight=int8)
    except Exception as exc:  # noqa: BLE001  (a tile that does not compile is a row of the table)
        return {"error": str(exc).splitlines()[0][:200]}
    return cubin_usage(compiled)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    rows = []
    for kind, tiles in UNIT_CANDIDATES.items():
        for channels in (128, 256):
            for tile in tiles:
                why = unit_fits(channels, (tile[0], min(tile[1], channels), min(tile[2], channels), *tile[3:]))
                row = {"kind": kind, "channels": channels, "tile": "x".join(map(str, tile)),
                       **({"not_offered": why} if why else resources(channels, tile, kind == "int8"))}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"triton": triton.__version__, "target": "cuda sm_90",
                                              "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
