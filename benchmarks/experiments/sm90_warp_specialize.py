"""Triton's automatic warp specialization on sm_90, compiled here with no GPU (issue 36: the lead
"a warp-specialized fp16 unit or k=7 layer" of the run-19 notes).

    python benchmarks/experiments/sm90_warp_specialize.py [--out FILE.json]

`tl.range(..., warp_specialize=True)` asks Triton to split a loop into a producer (the TMA loads) and
consumer warpgroups (the wgmma), the schedule the unit kernel's profile asks for. For each tile, with the
option off and on, this compiles two kernels for sm_90 (GPUTarget("cuda", 90, 128)):
- `matmul`: the plainest TMA matmul, one [BM, BN] tile a program, fp16 into fp32;
- `layer`: the project's fp16 k=7 layer (kernels.triton_conv.fused_conv_kernel, Snake epilogue).

For each it records whether it compiled, the warps the binary launches with, whether the PTX sets
per-partition registers (setmaxnreg: real specialization), the registers, and from the TTGIR each
consumer partition's dot shape and the tile its store writes. Where two partitions run the same dot on
the same shared-memory stage and store to the same place, they compute one tile twice.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from sm90_unit import TARGET, compile_layer, cubin_usage  # noqa: E402

TILES = ((128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (256, 128, 64, 4, 3), (64, 128, 64, 4, 4),
         (64, 128, 64, 4, 3))


@triton.jit
def matmul_kernel(a_desc, b_desc, c_desc, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                  WS: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in tl.range(0, tl.cdiv(K, BK), warp_specialize=WS):
        acc = tl.dot(a_desc.load([pid_m * BM, k * BK]), b_desc.load([pid_n * BN, k * BK]).T, acc)
    c_desc.store([pid_m * BM, pid_n * BN], acc.to(tl.float16))


def _compile(fn, sig: dict, const: dict, warps: int, stages: int) -> triton.compiler.CompiledKernel:
    sig = {**sig, **{name: "constexpr" for name in const}}
    aligned = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(sig.values()) if kind.startswith("*")}
    return triton.compile(ASTSource(fn, sig, const, aligned), target=TARGET,
                          options={"num_warps": warps, "num_stages": stages})


def matmul(tile: tuple[int, ...], ws: bool) -> triton.compiler.CompiledKernel:
    bm, bn, bk, warps, stages = tile
    sig = {"a_desc": f"tensordesc<fp16[{bm}, {bk}]>", "b_desc": f"tensordesc<fp16[{bn}, {bk}]>",
           "c_desc": f"tensordesc<fp16[{bm}, {bn}]>", "K": "i32"}
    return _compile(matmul_kernel, sig, dict(BM=bm, BN=bn, BK=bk, WS=ws), warps, stages)


def layer(tile: tuple[int, ...], ws: bool) -> triton.compiler.CompiledKernel:
    """The fp16 k=7 layer of block 0 (1024 channels in and out) writing the next layer's input."""
    return compile_layer(1024, 1024, tile, False, ws=ws)


DOT = re.compile(r"warp_group_dot (%\w+), .*async_task_id = array<i32: (\d+)>.*-> tensor<(\w+)")
STORE = re.compile(r"async_tma_copy_local_to_global %\w+\[([^\]]*)\]")


def partitions(ttgir: str) -> list[dict]:
    """Each warp_specialize partition that multiplies: its task id, dot shape, and the store coordinates'
    expressions (SSA names stripped of their partition's suffixes)."""
    out: dict[str, dict] = {}
    blocks = re.split(r"\n\s*partition\d+\(", ttgir)
    for block in blocks[1:]:
        dots = DOT.findall(block)
        if not dots:
            continue
        task = dots[0][1]
        stores = [re.sub(r"_\d+", "", s) for s in STORE.findall(block)]
        out[task] = {"task": int(task), "dot": dots[0][2], "stores": stores}
    return list(out.values())


def row(kernel: str, tile: tuple[int, ...], ws: bool) -> dict:
    r = {"kernel": kernel, "tile": "x".join(map(str, tile)), "warp_specialize": ws}
    try:
        compiled = (matmul if kernel == "matmul" else layer)(tile, ws)
    except Exception as exc:  # noqa: BLE001  (a tile that does not compile is a row of the record)
        r["error"] = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        return r
    parts = partitions(compiled.asm["ttgir"])
    r.update(cubin_usage(compiled), launch_warps=compiled.metadata.num_warps,
             setmaxnreg="setmaxnreg" in compiled.asm["ptx"], consumers=parts)
    if len(parts) > 1:
        r["same_tile_twice"] = len({(p["dot"], tuple(p["stores"])) for p in parts}) < len(parts)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    rows = [row(kernel, tile, ws) for kernel in ("matmul", "layer") for tile in TILES for ws in (False, True)]
    for r in rows:
        brief = {k: v for k, v in r.items() if k not in ("consumers", "dynamic_shared_bytes", "local_bytes")}
        print(json.dumps(brief))
    if args.out:
        Path(args.out).write_text(json.dumps({"triton": triton.__version__, "target": "cuda sm_90", "rows": rows},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
