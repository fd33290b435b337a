"""DVC stage `sensitivity`: quality of each convolution layer alone in INT8, on held-out
latents against fp32, for the report's per-layer chart."""

from vae_engines.core import device, entry, params
from vae_engines.quant.sensitivity import sensitivity_stage


def main(args):
    p = params.load(args.params)
    sensitivity_stage(p.sensitivity.calibrator, p.sensitivity.max_latents, fp32_onnx=args.onnx, stats_npz=args.stats,
                      holdout_dir=args.holdout, out_json=args.out, plot_json=args.plot,
                      device=device.resolve(p.compute))


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--onnx", required=True, help="fp32 ONNX")
    p.add_argument("--stats", required=True, help="activation statistics (.npz)")
    p.add_argument("--holdout", required=True, help="held-out latent set folder")
    p.add_argument("--out", required=True, help="sensitivity.json")
    p.add_argument("--plot", required=True, help="rows for dvc plots (JSON)")
    entry.run(main, p)
