"""DVC stage `sensitivity`: quality of each convolution layer alone in INT8, on held-out
latents against fp32, for the report's per-layer chart."""

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.quant.calibrators import calibrate_amax
from vae_engines.model.export import load_onnx
from vae_engines.core.fileio import write_json
from vae_engines.data.latents import read_latent_set
from vae_engines.core.provenance import provenance
from vae_engines.quant.qdq import quantizable_layers
from vae_engines.quant.sensitivity import layer_sensitivity, reference_decode


def main(args):
    params = config.load(args.params)
    s = params.sensitivity
    base = load_onnx(args.onnx)
    layers = quantizable_layers(base)
    calibration = read_latent_set(args.calibration)
    amax = calibrate_amax(args.onnx, list(dict.fromkeys(l.activation for l in layers)),
                          (x[None] for x in calibration), calibrator=s.calibrator)
    held = read_latent_set(args.holdout)[: s.max_latents]
    rows = layer_sensitivity(base, layers, amax, held, reference_decode(args.onnx, held))
    write_json(args.out, {
        "calibrator": s.calibrator,
        "latents": int(len(held)),
        "layers": {r["layer"]: {"peak_psnr_db": r["peak_psnr_db"], "stft_distance": r["stft_distance"]} for r in rows},
        "most_sensitive": [r["layer"] for r in sorted(rows, key=lambda r: r["peak_psnr_db"])[:5]],
        "provenance": provenance(args.env, args.onnx, params.model, s),
    })
    write_json(args.plot, rows)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--onnx", required=True, help="fp32 ONNX")
    p.add_argument("--calibration", required=True)
    p.add_argument("--holdout", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--plot", required=True)
    entry.run(main, p)
