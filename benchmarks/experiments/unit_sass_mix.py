"""Which instructions the Triton unit kernel is made of: its sm_90 machine code (compiled here, no
GPU) counted by opcode, for the tiles the H100 tuner chose at block 4 (int8 128x128x128x4x3, fp16
128x64x64x8x3; 128 channels). Nsight Compute found the unit issue-bound (benchmarks/results/
README.md, "A persistent Gluon int8 unit kernel": 487 M warp instructions issued for 2,880,000 x
128 outputs, about 42 thread instructions per output element), so the mix says where to cut.

    python benchmarks/experiments/unit_sass_mix.py [--out FILE.json]

Counts are static (each instruction of the cubin once: the k=7 loop's body counts once, the
epilogue, unrolled over its column chunks, in full; code in a loop counts once); "per element"
divides by the outputs a thread computes per tile (BM x C / threads). Two sines per element are
the arithmetic's own: a MUFU count below 2 means some of them sit in a loop. Run it with the lent GPU's Triton (3.6) for the record in
results/gpu_units/unit_sass_mix_triton36.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402

from sm90_unit import compile_unit, sass_opcodes  # noqa: E402

CHANNELS = 128
TILES = {"int8": (128, 128, 128, 4, 3), "fp16": (128, 64, 64, 8, 3)}
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    record = {"triton": triton.__version__, "target": "cuda sm_90", "channels": CHANNELS, "kernels": []}
    for kind, tile in TILES.items():
        counts = sass_opcodes(compile_unit(CHANNELS, tile, kind == "int8"))
        per_thread = tile[0] * CHANNELS / (tile[3] * 32)
        top = counts.most_common(16)
        record["kernels"].append({"kind": kind, "tile": list(tile), "static_instructions": sum(counts.values()),
                                  "outputs_per_thread_per_tile": per_thread,
                                  "per_element": {op: round(n / per_thread, 2) for op, n in top},
                                  "counts": dict(counts.most_common())})
        print(kind, tile, sum(counts.values()), "instructions;", ", ".join(f"{op} {n / per_thread:.2f}"
                                                                          for op, n in top), "per element")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
