"""Quantize stages before and after statistics were collected once per calibration set.

    git worktree add /tmp/old 0024468        # the last commit that calibrated per variant
    python benchmarks/experiments/quantize_speed.py --old-tree /tmp/old [--out benchmarks/results/quantize_speed]

Both sides run their own `stages/quantize.py` (the old one with PYTHONPATH pointing at the
old tree) as separate processes, one after another, on the same fp32 ONNX and calibration
latents of this workspace (run `dvc repro stats` first), for the five recipes the old
default shipped. The new side adds its `stats` stage, which the recipes share. Wall time
per process, start-up included, as DVC would run them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "entropy": {"calibrator": "entropy"},
    "minmax": {"calibrator": "minmax"},
    "percentile": {"calibrator": "percentile", "percentile": 99.99},
    "entropy_keep_ends": {"calibrator": "entropy", "keep_first": 1, "keep_last": 1},
    "auto_40db": {"calibrator": "entropy", "target_psnr_db": 40, "target_reference": "fp32"},
}


def timed(cmd: list[str], env: dict, cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
    return round(time.perf_counter() - start, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old-tree", required=True, help="a checkout of commit 0024468")
    p.add_argument("--onnx", default="engines/onnx/fp32.onnx")
    p.add_argument("--fp16", default="engines/onnx/fp16.onnx")
    p.add_argument("--calibration", default="data/calibration")
    p.add_argument("--out", default="benchmarks/results/quantize_speed")
    args = p.parse_args()
    old = Path(args.old_tree).resolve()
    onnx, fp16, calibration = (str(Path(x).resolve()) for x in (args.onnx, args.fp16, args.calibration))
    result = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_params = yaml.safe_load((old / "params.yaml").read_text())
        old_params["int8"] = RECIPES
        (tmp / "old.yaml").write_text(yaml.safe_dump(old_params))
        env = {**os.environ, "PYTHONPATH": str(old)}
        for name in RECIPES:
            result["old"][name] = timed([sys.executable, str(old / "stages/quantize.py"), "--params", str(tmp / "old.yaml"),
                                         "--variant", name, "--onnx", onnx, "--fp16", fp16, "--calibration", calibration,
                                         "--out", str(tmp / f"old_{name}.onnx"), "--ranges", str(tmp / f"old_{name}.json")],
                                        env, tmp)
            print("old", name, result["old"][name], file=sys.stderr)
        new_params = yaml.safe_load((ROOT / "params.yaml").read_text())
        new_params["int8"] = {k: {**v, "float_type": "fp32"} for k, v in RECIPES.items()}  # as the old graphs
        new_params["compute"]["device"] = "cpu"
        (tmp / "new.yaml").write_text(yaml.safe_dump(new_params))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result["new"]["stats"] = timed([sys.executable, str(ROOT / "stages/stats.py"), "--params", str(tmp / "new.yaml"),
                                        "--onnx", onnx, "--calibration", calibration, "--out", str(tmp / "s.npz"),
                                        "--record", str(tmp / "s.json")], env, tmp)
        for name in RECIPES:
            result["new"][name] = timed([sys.executable, str(ROOT / "stages/quantize.py"), "--params",
                                         str(tmp / "new.yaml"), "--variant", name, "--onnx", onnx, "--stats",
                                         str(tmp / "s.npz"), "--calibration", calibration, "--out",
                                         str(tmp / f"new_{name}.onnx"), "--ranges", str(tmp / f"new_{name}.json")],
                                        env, tmp)
            print("new", name, result["new"][name], file=sys.stderr)
    from vae_engines.core.env import fingerprint

    result["total_old_s"] = round(sum(result["old"].values()), 1)
    result["total_new_s"] = round(sum(result["new"].values()), 1)
    result["speedup"] = round(result["total_old_s"] / result["total_new_s"], 2)
    result["machine"] = fingerprint()
    result["calibration_shape"] = list(np.load(Path(calibration) / "latents.npy", mmap_mode="r").shape)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Quantize stages for the old default's five recipes on {result['machine']['cpu']} "
             f"({result['machine']['cpu_count']} cores), calibration latents {result['calibration_shape']}; wall "
             "time per stage process (s).", "",
             "| stage | before (per-variant ORT calibration) | after (shared statistics) |", "|---|---|---|",
             f"| stats (shared) | - | {result['new']['stats']} |"]
    lines += [f"| quantize@{n} | {result['old'][n]} | {result['new'][n]} |" for n in RECIPES]
    lines += [f"| **total** | **{result['total_old_s']}** | **{result['total_new_s']}** |", "",
              f"{result['speedup']}x faster in all."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
