"""Peak memory of calibrating the full-size decoder at a long window (default 1500 frames).

    python benchmarks/calibration_memory.py --frames 1500 --calibrator entropy

Exports the seeded full-size ACE-Step 1.5 decoder to a scratch folder, calibrates every
convolution input on one random latent, and prints the process's peak RSS (ru_maxrss) and
the number of grouped passes. A benchmark, not a test: it takes minutes on 2 cores.
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vae_engines.core import params as config
from vae_engines.quant.calibrators import DEFAULT_MEMORY_BUDGET, calibrate_amax
from vae_engines.core.entry import setup_logging
from vae_engines.model.export import load_onnx, onnx_from_decoder
from vae_engines.model.oobleck import fold_decoder, load_vae
from vae_engines.quant.qdq import quantizable_layers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1500)
    p.add_argument("--calibrator", default="entropy", choices=["entropy", "minmax", "percentile", "mse"])
    p.add_argument("--budget-gib", type=float, default=DEFAULT_MEMORY_BUDGET / 2**30)
    args = p.parse_args()
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "fp32.onnx"
        full_size = config.ModelParams(source="seeded", architecture="acestep-1.5")
        onnx_from_decoder(fold_decoder(load_vae(full_size).vae), onnx_path, opset=18)
        after_export = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        tensors = [l.activation for l in quantizable_layers(load_onnx(onnx_path))]
        latent = np.random.default_rng(0).standard_normal((1, 64, args.frames)).astype(np.float32)
        start = time.perf_counter()
        amax = calibrate_amax(onnx_path, tensors, [latent], calibrator=args.calibrator,
                              memory_budget_bytes=int(args.budget_gib * 2**30))
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"frames={args.frames} calibrator={args.calibrator} tensors={len(amax)} budget={args.budget_gib} GiB "
          f"calibration_seconds={seconds:.0f} peak_rss_gib={peak:.2f} (after export {after_export:.2f})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
