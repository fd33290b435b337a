"""DVC stage `bench_int8@<variant>`: an INT8 variant's engine beside the compiled fp16 engine,
timed in the same rounds, on the compute device; its memory, held-out quality, streaming and
cost by length."""

from vae_engines.core import device, entry, params
from vae_engines.measure.torch_engines import bench_int8


def main(args):
    p = params.load(args.params)
    bench_int8(args.variant, p.bench, device=device.resolve(p.compute), engine=args.engine,
               fp16_engine=args.fp16_engine, holdout_dir=args.holdout, reference_dir=args.reference,
               out_json=args.out, plot_json=args.plot)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--variant", required=True, help="the INT8 variant")
    p.add_argument("--engine", required=True, help="its engine (engines/torch_int8/<variant>.pt2)")
    p.add_argument("--fp16-engine", required=True, help="the compiled fp16 engine it is timed against")
    p.add_argument("--holdout", required=True, help="held-out latent set folder")
    p.add_argument("--reference", required=True, help="reference decodes folder")
    p.add_argument("--out", required=True, help="the record (JSON)")
    p.add_argument("--plot", required=True, help="latency rows for dvc plots (JSON)")
    entry.run(main, p)
