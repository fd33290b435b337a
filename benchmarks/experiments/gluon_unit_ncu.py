"""Why the Gluon int8 unit kernel (experiments/gluon_unit_kernel.py) is slower than the Triton one:
both at block 4's 60 s shape (2,880,000 rows x 128 channels, dilation 1), each launched twice (the
first compiles; only the second matters), for Nsight Compute. The H100 record
(results/gluon/h100_ncu/) ran

    ncu --clock-control none --kernel-name regex:"unit_kernel" --csv --page details \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section Occupancy --section LaunchStats \
        --section SchedulerStats --section InstructionStats \
        python3 benchmarks/experiments/gluon_unit_ncu.py > ncu.csv
    python3 benchmarks/experiments/ncu_summary.py ncu.csv > summary.txt

Operands and launches are experiments/gpu_gluon_unit.py's; the order of the kernels is printed
to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import gpu_gluon_unit as bench  # noqa: E402

ROWS, DILATION = 2_880_000, 1
VARIANTS = ("one_wg_staged_async", "two_wg_ring4")


def main() -> None:
    o = bench.operands(ROWS, DILATION)
    programs = torch.cuda.get_device_properties(0).multi_processor_count
    y, s = o["y0"].clone(), torch.empty_like(o["x"])
    for _ in range(2):
        print("triton", bench.TRITON_TILES[0], file=sys.stderr)
        bench.run_triton(o, y, s, DILATION, bench.TRITON_TILES[0])
    for variant in VARIANTS:
        for _ in range(2):
            print("gluon", variant, file=sys.stderr)
            bench.run_gluon(o, y, s, DILATION, variant, programs)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
