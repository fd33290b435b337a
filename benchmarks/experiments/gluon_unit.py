"""The Gluon int8 unit kernel (experiments/gluon_unit_kernel.py) compiled for sm_90 on a machine
with no GPU: registers, local memory, shared memory and the warp-specialized partitions'
register targets of every tile in its TILES, at the unit's dilations 1, 3 and 9 (issue 36).

    python benchmarks/experiments/gluon_unit.py [--out FILE.json] [--variant NAME ...]

Run it with the lent GPU's Triton (3.6: a side virtualenv with the package index's
triton==3.6.0 wheel and torch==2.13.0) for the record in results/gluon/unit_sm90_triton36.json;
the project's Triton 3.9 compiles the same source. The kernel itself is timed on a GPU by
benchmarks/experiments/gpu_gluon_unit.py.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402

from sm90_unit import cubin_usage, sass_opcodes  # noqa: E402

from gluon_unit_kernel import TILES, compile_offline  # noqa: E402


def local_traffic(compiled: Any) -> dict:
    """Local-memory stores and loads in the machine code (STL / LDL: spills, or a stack frame's saves)."""
    opcodes = sass_opcodes(compiled)
    return {"sass_stl": opcodes["STL"], "sass_ldl": opcodes["LDL"]}


SETMAXNREG = r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="also write the rows as JSON here")
    p.add_argument("--variant", action="append", default=None, help="only these variants")
    p.add_argument("--dilation", type=int, action="append", default=None, help="only these dilations (1, 3, 9)")
    args = p.parse_args()
    rows = []
    for variant in args.variant or TILES:
        for dilation in args.dilation or (1, 3, 9):
            try:
                compiled = compile_offline(TILES[variant], dilation)
                ptx = compiled.asm["ptx"]
                # registers: what a thread holds at launch; a warp-specialized kernel's partitions then
                # move to their own counts (setmaxnreg's targets)
                row = {"variant": variant, "dilation": dilation, "warps": compiled.metadata.num_warps,
                       **cubin_usage(compiled), **local_traffic(compiled),
                       "wgmma": ptx.count("wgmma.mma_async"),
                       "setmaxnreg_targets": sorted({int(v) for v in re.findall(SETMAXNREG, ptx)})}
            except Exception as exc:  # noqa: BLE001  (a variant that does not compile is a row of the table)
                row = {"variant": variant, "dilation": dilation, "error": str(exc)[-600:]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps({"triton": triton.__version__, "target": "cuda sm_90", "rows": rows},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
