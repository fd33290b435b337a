"""INT8 quality of the trained fixture next to the same architecture with random weights.

    python benchmarks/fixture_int8.py [--frames 64] [--count 8]

For each model: fp32 ONNX; calibration latents = the model's encoder on built-in corpus
clips (seed 0); held-out latents = encodings of other clips (seed 1); entropy and minmax
Q/DQ (every convolution); peak PSNR of ONNX Runtime Q/DQ vs fp32 on the held-out latents.
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from vae_engines.core import params as config
from vae_engines.quant.calibrators import calibrate_amax
from vae_engines.core.entry import setup_logging
from vae_engines.model.export import load_onnx, onnx_from_decoder
from vae_engines.data.latents import audio_windows, encode_audio
from vae_engines.measure.metrics import peak_psnr
from vae_engines.model.oobleck import fold_decoder, load_vae
from vae_engines.quant.qdq import qdq_onnx_from_onnx, quantizable_layers
from vae_engines.measure.runtimes import OrtRuntime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--count", type=int, default=8)
    args = p.parse_args()
    setup_logging()
    models = {"fixture (trained)": config.ModelParams(source="fixture"),
              "acestep-1.5-small, random weights": config.ModelParams(source="seeded",
                                                                       architecture="acestep-1.5-small")}
    for label, params in models.items():
        loaded = load_vae(params)
        samples = args.frames * loaded.hop
        cal = encode_audio(loaded.vae, audio_windows(None, args.count, samples, loaded.sampling_rate, 0)[0], False)
        held = encode_audio(loaded.vae, audio_windows(None, 4, samples, loaded.sampling_rate, 1)[0], False)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = onnx_from_decoder(fold_decoder(loaded.vae), Path(tmp) / "fp32.onnx", opset=18)
            layers = quantizable_layers(load_onnx(fp32))
            ref = np.concatenate([OrtRuntime(fp32).decode(x[None]) for x in held])
            for calibrator in ("entropy", "minmax"):
                amax = calibrate_amax(fp32, [l.activation for l in layers], (x[None] for x in cal),
                                      calibrator=calibrator)
                q = qdq_onnx_from_onnx(fp32, Path(tmp) / f"{calibrator}.onnx", amax, layers)
                out = np.concatenate([OrtRuntime(q).decode(x[None]) for x in held])
                print(f"{label}: {calibrator} peak PSNR vs fp32 {peak_psnr(ref, out):.1f} dB "
                      f"({args.count} calibration latents x {args.frames} frames)", file=sys.stderr)


if __name__ == "__main__":
    main()
