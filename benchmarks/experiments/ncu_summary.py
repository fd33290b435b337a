"""The few Nsight Compute figures that say what bounds a kernel, one block per measured launch,
from `ncu --csv --page details` output (benchmarks/experiments/unit_ncu.py says how it ran).

    python benchmarks/experiments/ncu_summary.py ncu.csv

Only odd launch IDs are printed: unit_ncu.py launches every variant twice and the first compiles.
"""

import collections
import csv
import sys

WANT = ("Duration", "SM Frequency", "Compute (SM) Throughput", "L1/TEX Cache Throughput", "L2 Cache Throughput",
        "DRAM Throughput", "L1/TEX Hit Rate", "L2 Hit Rate", "Achieved Occupancy", "Registers Per Thread",
        "Issue Slots Busy", "No Eligible", "Warp Cycles Per Issued Instruction", "Block Limit Shared Mem",
        "Block Limit Registers", "Dynamic Shared Memory Per Block")


def main(path: str) -> None:
    lines = open(path).read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    table: dict[int, dict[str, str]] = collections.defaultdict(dict)
    rules: dict[int, list[tuple]] = collections.defaultdict(list)
    names: dict[int, str] = {}
    for r in csv.DictReader(lines[start:]):
        i = int(r["ID"])
        names[i] = f'{r["Kernel Name"]} grid {r["Grid Size"]} block {r["Block Size"]}'
        if r["Metric Name"]:
            table[i][r["Metric Name"]] = f'{r["Metric Value"]} {r["Metric Unit"]}'.strip()
        if r.get("Rule Description") and r.get("Estimated Speedup"):
            rules[i].append((r["Rule Name"], r["Estimated Speedup"], r["Rule Description"][:200]))
    for i in sorted(table):
        if i % 2 == 0:
            continue
        print(f"--- launch {i}: {names[i]}")
        print("    " + " | ".join(f"{w}: {table[i][w]}" for w in WANT if w in table[i]))
        for rule in rules[i]:
            print("      rule", rule)


if __name__ == "__main__":
    main(sys.argv[1])
