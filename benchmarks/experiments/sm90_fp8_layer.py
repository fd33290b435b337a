"""The fused layer kernel compiled for sm_90 without a GPU, fp16 / int8 / fp8 operands:
registers, spills (local memory), shared memory, and whether the fp8 MMAs are e4m3 wgmma
(issue 36, item 5; before device time was spent on timing them).

    python benchmarks/experiments/sm90_fp8_layer.py > benchmarks/results/fp8_layers/sm90_resources.txt

One row per kind, tile (BM, BN, BK, warps, stages), layer kind (k=7 writing its next input;
k=1 adding into the residual stream) and, for fp8, FP8_ACC (0: Triton's sm_90 default, the
reduced-precision sum never promoted; 128: promoted every 128 products). Resource use from
the cuobjdump Triton ships, as benchmarks/sm90_unit.py reads the unit kernel.
"""

import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vae_engines.kernels.triton_conv import fused_conv_kernel  # noqa: E402

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
TYPES = {"fp16": "fp16", "int8": "i8", "fp8": "fp8e4nv"}


def resources(kind: str, tile: tuple, residual: bool, fp8_acc: int) -> str:
    bm, bn, bk, warps, stages = tile
    t = TYPES[kind]
    sig = {"x_desc": f"tensordesc<{t}[1, {bm}, {bk}]>", "w_desc": f"tensordesc<{t}[{bn}, {bk}]>",
           "y_desc": f"tensordesc<fp16[1, {bm}, {bn}]>", "s_desc": f"tensordesc<{t}[1, {bm}, {bn}]>",
           **{p: "*fp32" for p in ("w_scale_ptr", "bias_ptr", "alpha_ptr", "inv_beta_ptr")},
           **{i: "i32" for i in ("M", "N", "C_IN", "TAPS", "DIL", "PAD", "N_HALF", "N_CH")},
           **{f: "fp32" for f in ("x_scale", "inv_s_scale", "res_scale")}}
    const = dict(INT8_IN=kind == "int8", FP8_IN=kind == "fp8", HAS_BIAS=True, RESIDUAL=residual, RES_QUANT=False,
                 STORE_Y=residual, AUDIO=False, STORE_S=True, S_INT8=kind == "int8", S_FP8=kind == "fp8",
                 FP8_ACC=fp8_acc, TRANSPOSED=False, FAST_SIN=True, BM=bm, BN=bn, BK=bk, PERSISTENT=False, WS=False)
    compiled = triton.compile(ASTSource(fused_conv_kernel, {**sig, **{k: "constexpr" for k in const}}, const),
                              target=GPUTarget("cuda", 90, 128), options={"num_warps": warps, "num_stages": stages})
    cubin = Path("/tmp") / f"sm90_fp8_layer_{kind}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    usage = subprocess.run([str(CUOBJDUMP), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                           check=True).stdout
    cubin.unlink()
    f = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    e4m3 = len(re.findall(r"wgmma[^\n]*e4m3", compiled.asm["ptx"]))
    return (f"registers {f['REG']}, local bytes {f['LOCAL']}, dynamic shared {compiled.metadata.shared}, "
            f"e4m3 wgmma instructions {e4m3}")


def main() -> None:
    print(f"# Triton {triton.__version__}, target cuda sm_90, kernels.triton_conv.fused_conv_kernel")
    rows = [("fp16", (128, 128, 64, 8, 3), 0), ("fp16", (64, 128, 64, 4, 4), 0), ("int8", (128, 128, 128, 8, 3), 0),
            ("int8", (64, 128, 128, 4, 4), 0)]
    rows += [("fp8", tile, acc) for acc in (0, 128) for tile in ((128, 128, 128, 8, 3), (64, 128, 128, 4, 4))]
    for kind, tile, acc in rows:
        for residual in (False, True):
            what = "k=1 residual" if residual else "k=7"
            label = f"{kind}{f' FP8_ACC={acc}' if kind == 'fp8' else ''} {'x'.join(map(str, tile))} {what}"
            print(f"{label}: {resources(kind, tile, residual, acc)}", flush=True)


if __name__ == "__main__":
    main()
