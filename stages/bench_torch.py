"""DVC stage `bench_torch`: eager PyTorch (what apps run today) beside the compiled PyTorch
engines, on the compute device: latency, memory, held-out quality, streaming."""

from vae_engines.core import device, entry, params
from vae_engines.measure.torch_engines import bench_torch


def main(args):
    p = params.load(args.params)
    bench_torch(args.decoder, p.bench, p.compile.precisions, device=device.resolve(p.compute),
                engines_dir=args.engines, holdout_dir=args.holdout, reference_dir=args.reference, out_json=args.out,
                plot_json=args.plot)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--decoder", required=True, help="the folded decoder (engines/decoder.safetensors, from export)")
    p.add_argument("--engines", required=True, help="folder of compiled engines (<precision>.pt2)")
    p.add_argument("--holdout", required=True, help="held-out latent set folder")
    p.add_argument("--reference", required=True, help="reference decodes folder")
    p.add_argument("--out", required=True, help="bench.json")
    p.add_argument("--plot", required=True, help="latency rows for dvc plots (JSON)")
    entry.run(main, p)
