"""How many wgmma the residual-unit kernel keeps in flight in its k=7 loop, per operand kind,
compiled for sm_90 with no GPU: the reason the INT8 unit cannot overlap its tensor-core work
the way the fp16 and FP8 ones do (issue 36).

    python benchmarks/experiments/wgmma_async.py [--out FILE.json]

For each kind (fp16; int8; fp8 e4m3 with its sums never promoted) it compiles the unit at 128
channels in that kind's tuned block-4 tile and reads Triton's own IR and PTX: whether the loop's
`ttng.warp_group_dot` is async, the `pendings` of the `ttng.warp_group_dot_wait` that follows it
(1: the next iteration's wgmma is issued while this one runs; 0: each wgmma is waited for where
it stands) and the PTX's `wgmma.wait_group` counts. Triton's WGMMA pipeliner
(lib/Dialect/TritonGPU/Transforms/Pipeliner/WGMMAPipeline.cpp, `dotCanBeProperlyAsync`, "Rule
2.1") makes a dot properly async only where its accumulator is fp32; int8's is int32.

`int8 in flight` is the int8 unit as the GPU launch compiles it now, through kernels.inflight's
rewrite of that wait; the `layer` rows are the layer kernel (kernels.triton_conv) at a block-0
k=7 shape (1024 channels, the H100 tune's int8 tile), without and with it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sm90_unit import compile_layer, compile_unit, cubin_usage  # noqa: E402

KINDS = {  # name -> (int8, fp8, rewrite, the block-4 unit tile the H100 tune chose: BM, BK, BN2, warps, stages)
    "fp16": (False, False, False, (128, 64, 64, 8, 3)),
    "int8": (True, False, False, (128, 128, 128, 4, 3)),
    "int8 in flight": (True, False, True, (128, 128, 128, 4, 3)),
    "fp8": (True, True, False, (128, 128, 128, 4, 3)),
}
LAYER_TILE = (256, 128, 128, 8, 3)  # block.0's k=7 int8 layers on the H100 (BM, BN, BK, warps, stages)


def in_flight(kind: str) -> dict:
    if kind.startswith("layer"):
        compiled = compile_layer(1024, 1024, LAYER_TILE, True, inflight=kind.endswith("in flight"))
        tile = LAYER_TILE
    else:
        int8, fp8, rewrite, tile = KINDS[kind]
        compiled = compile_unit(128, tile, int8, fp8, inflight=rewrite)
    ttgir, ptx = compiled.asm["ttgir"], compiled.asm["ptx"]
    return {"tile": "x".join(map(str, tile)),
            "dot_async": re.findall(r"ttng\.warp_group_dot .*?isAsync = (\w+)", ttgir),
            "dot_wait_pendings": [int(p) for p in re.findall(r"ttng\.warp_group_dot_wait .*?pendings = (\d+)", ttgir)],
            "ptx_wgmma_wait_group": [int(n) for n in re.findall(r"wgmma\.wait_group\.sync\.aligned (\d+)", ptx)],
            **cubin_usage(compiled)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the result as JSON here")
    args = p.parse_args()
    result = {"triton": triton.__version__, "target": "cuda sm_90 (compiled with no GPU)", "channels": 128,
              "kinds": {kind: in_flight(kind) for kind in [*KINDS, "layer int8", "layer int8 in flight"]}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
