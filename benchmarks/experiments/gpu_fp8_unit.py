"""Does the residual-unit kernel run faster on fp8 (e4m3) operands than on int8 (issue 36)?

    python3 benchmarks/experiments/gpu_fp8_unit.py --out DIR [--smoke]

A record: it ran at 28b384d, with a timing loop of its own; it times through gpu_units.kernel_ms
now (the same median of 11, since 2026-12-08 without the host's launch work: core.clock).

Why it might: Nsight Compute put a fifth of the int8 unit's warp stalls on its k=7 loop waiting
for each wgmma to finish. Triton's Hopper pipeliner keeps a wgmma in flight only when its
accumulator is fp32 (results/README.md, "Where, instruction by instruction"). int8 accumulates in
int32, fp8 in fp32, and Hopper runs both at the same rate. Offline (sm_90, Triton 3.6), the fp8
unit keeps one wgmma in flight when the reduced-precision sums are never promoted (fp8_acc 0), not
with a promotion every 128 products (the tile 128x128x128x4x3).

The fp8 unit quantizes its operands with the hardware's conversion (kernels.triton_conv.
_quantize_fp8's FAST path): 3,576 machine instructions for that tile against int8's 4,096.

The unit kernel alone, at block 4's and block 3's 60 s shapes (2,880,000 and 1,440,000 rows x
128 channels, dilation 1), random operands. Kinds:
- int8;
- fp8 with fp8_acc 0 and with fp8_acc 128;
- fp16, as a reference.

Each kind runs in the tuner's unit tiles. Timing: every variant's median of 11 launches back to
back between CUDA events, 3 turns taking turns. Check: the fp8 kinds' residual-stream output
against the int8 unit's on the same codes (rounded to e4m3), as the largest difference over the
largest change int8 made to the stream: that the kernel ran, not how accurate fp8 is. DIR/results.json is written
as each shape ends.
--smoke runs it on the CPU (Triton's interpreter, small shapes): it checks the script only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_units import CFG, kernel_ms  # noqa: E402
from unit_ncu import unit_inputs  # noqa: E402

from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.kernels import triton_unit  # noqa: E402
from vae_engines.measure.timing import turns  # noqa: E402

TILES = {"int8": [(128, 128, 128, 4, 3), (64, 128, 128, 4, 3), (128, 128, 128, 8, 3), (64, 128, 128, 8, 2)],
         "fp16": [(128, 64, 64, 8, 3), (64, 64, 128, 4, 3)]}
KINDS = {"int8": None, "fp8 acc0": 0, "fp8 acc128": None, "fp16": None}
TURNS, REPEATS = 3, 11


def inputs(rows: int, channels: int, kind: str, device: str) -> dict:
    """unit_ncu's operands; fp8 kinds take int8's codes as e4m3 values (rounded to 3 mantissa bits)."""
    o = unit_inputs(rows, channels, kind != "fp16", device)
    if kind.startswith("fp8"):
        for name in ("x", "w1", "w2"):
            o[name] = o[name].float().to(torch.float8_e4m3fn)
        o["s"] = torch.empty_like(o["s"], dtype=torch.float8_e4m3fn)
    return o


def run(o: dict, kind: str, tile: tuple) -> None:
    quantized = kind != "fp16"
    triton_unit.launch(**o, taps=7, dilation=1, x_scale=0.02 if quantized else 0.0,
                       mid_scale=0.05 if quantized else 0.0, s_scale=0.05 if quantized else 0.0, res_scale=0.0,
                       tile=tile, fp8_acc=KINDS[kind] if kind.startswith("fp8") else None)


def shape(rows: int, channels: int, device: str) -> dict:
    variants = [(kind, tile) for kind in KINDS for tile in TILES["fp16" if kind == "fp16" else "int8"]]
    operands = {kind: inputs(rows, channels, kind, device) for kind in KINDS}
    y0 = {kind: o["y"].clone() for kind, o in operands.items()}
    out: dict = {"rows": rows, "channels": channels, "ms": {}, "y_vs_int8": {}}
    for kind, tile in variants:  # compile, and the check: one call from the same residual stream
        o = operands[kind]
        o["y"].copy_(y0[kind])
        run(o, kind, tile)
        if tile == TILES["fp16" if kind == "fp16" else "int8"][0]:
            out.setdefault("y_first", {})[kind] = o["y"].float().clone()
    first = out.pop("y_first")
    change = (first["int8"] - y0["int8"].float()).abs().max()
    for kind in ("fp8 acc0", "fp8 acc128"):
        out["y_vs_int8"][kind] = round(float((first[kind] - first["int8"]).abs().max() / change), 4)
    ms: dict = {f"{kind} {'x'.join(map(str, tile))}": [] for kind, tile in variants}
    for turn in range(TURNS):
        for kind, tile in turns(variants, turn):
            o = operands[kind]
            ms[f"{kind} {'x'.join(map(str, tile))}"].append(kernel_ms(lambda: run(o, kind, tile), REPEATS, warm=False))
    out["ms"] = {k: [round(v, 4) for v in vs] for k, vs in ms.items()}
    out["median_ms"] = {k: round(float(np.median(vs)), 4) for k, vs in ms.items()}
    best = {kind: min(v for k, v in out["median_ms"].items() if k.startswith(kind + " ")) for kind in KINDS}
    out["best_ms"] = best
    out["best_vs_int8"] = {kind: round(best["int8"] / v, 3) for kind, v in best.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    device = "cpu" if args.smoke else "cuda"
    CFG.device = torch.device(device)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": fingerprint(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "shapes": []}
    shapes = [(300, 16)] if args.smoke else [(2_880_000, 128), (1_440_000, 128)]
    if args.smoke:
        for kind in TILES:
            TILES[kind] = [(64, 16, 16, 4, 2)]
        global TURNS, REPEATS
        TURNS, REPEATS = 1, 1
    for rows, channels in shapes:
        with torch.inference_mode():
            record = shape(rows, channels, device)
        results["shapes"].append(record)
        print(json.dumps({k: record[k] for k in ("rows", "median_ms", "best_vs_int8", "y_vs_int8")}), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
