"""Why the residual-unit kernels take what they take: the unit kernel (and one k=1 layer kernel)
at block 4's 60 s shape, each tile variant launched once after a warm-up, for Nsight Compute.

    ncu --clock-control none --kernel-name regex:"residual_unit|fused_conv" --launch-skip-before-match 0 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section Occupancy --csv --page details \
        python3 benchmarks/experiments/unit_ncu.py > ncu.csv
    python3 benchmarks/experiments/unit_ncu.py --smoke      # the launches on the CPU (interpreter)

Inputs are random, at the shapes of a 60 s decode (1500 frames): a 128-channel unit over
2,880,000 rows (block 4, dilation 1), fp16 and int8, and block 0's first k=1 layer (15,000 rows
x 1024 channels, int8). Each variant runs twice and only its second launch matters (the first
compiles; ncu profiles both, the order says which is which: printed to stderr). The tiles:
the tuner's choice at these units in the H100 runs and a 256-row tile. It ran once, at commit
ff2383b, where the unit kernel also had an x_cached tile option (the k=7 input
by pointer through L1, a sixth tile element) and each kind a third, x_cached, variant; that
option is gone (its L1 hit rate was 3-10%): benchmarks/results/gpu_units/h100_run7_tiles/.
It ran again at 422b1ea with the stall-reason metrics (the command is in results/README.md,
"Where the leaner unit waits"): benchmarks/results/gpu_units/h100_run13_lean/ncu_stalls.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vae_engines.kernels import triton_conv, triton_unit  # noqa: E402

UNIT_TILES = {"fp16": [(128, 64, 64, 8, 3), (256, 64, 64, 8, 3)],
              "int8": [(128, 128, 128, 4, 3), (256, 128, 128, 8, 3)]}
LAYER_TILES = [(64, 128, 128, 4, 4), (256, 128, 128, 8, 4)]


def unit_inputs(rows: int, channels: int, int8: bool, device: str) -> dict:
    g = torch.Generator(device=device).manual_seed(0)

    def q(shape):  # int8 codes, or fp16 values of about unit scale
        if int8:
            return torch.randint(-100, 100, shape, generator=g, device=device, dtype=torch.int8)
        return torch.randn(shape, generator=g, device=device).half()

    def vec(scale=1.0):
        return torch.rand(channels, generator=g, device=device) * scale + 0.5 * scale

    return dict(x=q((1, rows, channels)), w1=q((channels, 7 * channels)), w1_scale=vec(1e-3) if int8 else None,
                b1=vec(0.1), alpha1=vec(), inv_beta1=vec(), w2=q((channels, channels)),
                w2_scale=vec(1e-3) if int8 else None, b2=vec(0.1), alpha2=vec(), inv_beta2=vec(),
                y=torch.randn(1, rows, channels, generator=g, device=device).half(),
                s=torch.empty(1, rows, channels, device=device, dtype=torch.int8 if int8 else torch.float16))


def run_unit(inputs: dict, int8: bool, tile: tuple) -> None:
    triton_unit.launch(**inputs, taps=7, dilation=1, x_scale=0.02 if int8 else 0.0, mid_scale=0.05 if int8 else 0.0,
                       s_scale=0.05 if int8 else 0.0, res_scale=0.0, tile=tile)


def run_layer(rows: int, channels: int, tile: tuple, device: str) -> None:
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randint(-100, 100, (1, rows, channels), generator=g, device=device, dtype=torch.int8)
    w = torch.randint(-100, 100, (channels, channels), generator=g, device=device, dtype=torch.int8)
    vec = torch.rand(channels, generator=g, device=device) + 0.5
    y = torch.randn(1, rows, channels, generator=g, device=device).half()
    s = torch.empty(1, rows, channels, device=device, dtype=torch.int8)
    for _ in range(2):
        triton_conv.launch(x, w, vec * 1e-3, vec, vec, vec, y, s, taps=1, dilation=1, padding=0, stride=0,
                           x_scale=0.02, s_scale=0.05, res_scale=0.0, residual=True, audio=False, tile=tile)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1)")
    args = p.parse_args()
    device = "cpu" if args.smoke else "cuda"
    unit_rows, layer_rows, channels, wide = (300, 40, 16, 16) if args.smoke else (2_880_000, 15_000, 128, 1024)
    order = []
    for kind, tiles in UNIT_TILES.items():
        int8 = kind == "int8"
        inputs = unit_inputs(unit_rows, channels, int8, device)
        for tile in tiles:
            tile = (tile[0], min(tile[1], channels), min(tile[2], channels), *tile[3:])
            for launch in ("compile", "measure"):
                run_unit(inputs, int8, tile)
                order.append(f"unit {kind} {'x'.join(map(str, tile))} ({launch})")
        inputs = None
        torch.cuda.empty_cache() if device == "cuda" else None
    for tile in LAYER_TILES:
        tile = (64, 16, 16, 4, 2) if args.smoke else tile
        run_layer(layer_rows, wide, tile, device)
        order += [f"layer int8 k=1 {wide} ch {'x'.join(map(str, tile))} ({w})" for w in ("compile", "measure")]
    torch.cuda.synchronize() if device == "cuda" else None
    for i, what in enumerate(order):
        print(f"launch {i}: {what}", file=sys.stderr)


if __name__ == "__main__":
    main()
