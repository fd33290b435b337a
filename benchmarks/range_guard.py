"""Where INT8 quality collapses as the latent leaves its calibrated range: the measurement
behind runtime.guard.DEFAULT_RANGE_GUARD (issue 38).

Each INT8 variant's Q/DQ graph and the fp16 graph decode the held-out latents scaled so
that their max |x| is k times the variant's calibrated latent range (the ranges record's
amax of the graph input), on ONNX Runtime (int8 rounding and saturation exact); each decode
is scored by peak PSNR against the fp32 graph's decode of the same scaled latents. Run after
`dvc repro` (it reads engines/onnx/ and data/holdout/):

    python benchmarks/range_guard.py [--variants minmax entropy ...] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.fileio import read_json  # noqa: E402
from vae_engines.data.latentset import read_latent_set  # noqa: E402
from vae_engines.graph.io import latent_range  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.runtime.onnx import OnnxDecoder  # noqa: E402

FACTORS = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


def decode_all(engine: OnnxDecoder, held: np.ndarray) -> np.ndarray:
    """Every window, one at a time (the graphs take batch 1), guard off: this measures beyond it."""
    return np.concatenate([engine.decode(w[None], on_range="off").numpy() for w in held])


def variant_rows(name: str, onnx_dir: Path, held: np.ndarray, fp32: OnnxDecoder, fp16: OnnxDecoder) -> dict:
    """k -> peak PSNR vs fp32 of the variant and of fp16, on held-out latents scaled to k x its range."""
    input_range = latent_range(read_json(onnx_dir / f"{name}.ranges.json"))
    int8 = OnnxDecoder(onnx_dir / f"{name}.onnx")
    natural = float(np.abs(held).max()) / input_range
    rows = {}
    for k in FACTORS:
        x = held * np.float32(k * input_range / np.abs(held).max())
        reference = decode_all(fp32, x)
        rows[k] = {"int8_db": round(peak_psnr(reference, decode_all(int8, x)), 2),
                   "fp16_db": round(peak_psnr(reference, decode_all(fp16, x)), 2)}
        print(f"{name}: {k:>4}x range ({k * input_range:.3g}): int8 {rows[k]['int8_db']:.1f} dB, "
              f"fp16 {rows[k]['fp16_db']:.1f} dB", flush=True)
    return {"input_range": input_range, "heldout_absmax_over_range": round(natural, 3), "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["minmax", "entropy", "mse", "percentile", "minmax_fused"])
    p.add_argument("--onnx", default="engines/onnx", type=Path)
    p.add_argument("--holdout", default="data/holdout", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    held = read_latent_set(args.holdout)
    fp32, fp16 = OnnxDecoder(args.onnx / "fp32.onnx"), OnnxDecoder(args.onnx / "fp16.onnx")
    doc = {"machine": fingerprint(), "heldout": {"windows": int(held.shape[0]), "frames": int(held.shape[-1]),
                                                 "absmax": round(float(np.abs(held).max()), 4)},
           "factors": list(FACTORS), "variants": {v: variant_rows(v, args.onnx, held, fp32, fp16) for v in args.variants}}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
