"""DVC stage `stats`: activation statistics of every quantizable tensor over the calibration
latents, collected once for all INT8 variants."""

from vae_engines.core import device, entry, params
from vae_engines.quant.stats import collect_stats


def main(args):
    p = params.load(args.params)
    collect_stats(args.onnx, args.calibration, args.out, args.record, device=device.resolve(p.compute))


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--onnx", required=True, help="fp32 ONNX")
    p.add_argument("--calibration", required=True, help="calibration latent set folder")
    p.add_argument("--out", required=True, help="statistics (.npz)")
    p.add_argument("--record", required=True, help="summary and provenance (.json)")
    entry.run(main, p)
