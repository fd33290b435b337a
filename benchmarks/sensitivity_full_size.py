"""Per-layer sensitivity and auto layer choice on the full-size ACE-Step 1.5 decoder
(seeded random weights), once: the figures issue 8 asks for beside the fixture's.

    python benchmarks/sensitivity_full_size.py [--frames 16] [--targets 35 40]

Synthetic N(0,1) latents (the random-weight encoder makes no meaningful latents): 4 for
entropy calibration and for the greedy choice, 2 held-out (another seed) for the check.
"""

import argparse
import sys
import tempfile
from pathlib import Path


from vae_engines.core import params as config
from vae_engines.quant.calibrators import calibrate_amax
from vae_engines.core.entry import setup_logging
from vae_engines.model.export import load_onnx, onnx_from_decoder
from vae_engines.data.latents import synthetic_latents
from vae_engines.model.oobleck import fold_decoder, load_vae
from vae_engines.quant.qdq import insert_qdq, quantizable_layers
from vae_engines.quant.sensitivity import auto_keep, layer_sensitivity, quality, reference_decode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--targets", type=float, nargs="+", default=[35.0, 40.0])
    args = p.parse_args()
    setup_logging()
    full_size = config.ModelParams(source="seeded", architecture="acestep-1.5")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = onnx_from_decoder(fold_decoder(load_vae(full_size).vae), Path(tmp) / "fp32.onnx", opset=18)
        base = load_onnx(fp32)
        layers = quantizable_layers(base)
        cal = synthetic_latents(4, args.frames, 64, seed=0)
        held = synthetic_latents(2, args.frames, 64, seed=1)
        amax = calibrate_amax(fp32, [l.activation for l in layers], (x[None] for x in cal), calibrator="entropy")
        ref_cal, ref_held = reference_decode(fp32, cal), reference_decode(fp32, held)
        rows = layer_sensitivity(base, layers, amax, cal, ref_cal)
        ranked = sorted(rows, key=lambda r: r["peak_psnr_db"])
        print("most sensitive: " + ", ".join(f"{r['layer']} {r['peak_psnr_db']:.1f} dB" for r in ranked[:5]),
              file=sys.stderr)
        print(f"all INT8 on held-out: {quality(insert_qdq(base, layers, amax), held, ref_held)['peak_psnr_db']:.1f} dB",
              file=sys.stderr)
        for target in args.targets:
            choice = auto_keep(base, layers, amax, cal, ref_cal, target, ranking=rows)
            kept = set(choice["kept_in_float"])
            held_q = quality(insert_qdq(base, [l for l in layers if l.name not in kept], amax), held, ref_held)
            print(f"target {target} dB: keep {sorted(kept) or 'none'} -> {choice['achieved']['peak_psnr_db']:.1f} dB "
                  f"on calibration latents, {held_q['peak_psnr_db']:.1f} dB held-out", file=sys.stderr)


if __name__ == "__main__":
    main()
