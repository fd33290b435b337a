"""DVC stage `bench_int8`: every INT8 variant's engine (compile.int8) beside the compiled fp16
engine, in one process on the compute device: each timed in the same rounds as fp16, with
its memory, held-out quality, streaming and cost by length; an engine whose record still
holds keeps it."""

from vae_engines.core import device, entry, params
from vae_engines.measure.torch_engines import bench_int8_engines


def main(args):
    p = params.load(args.params)
    bench_int8_engines(p.compile.int8, p.bench, device=device.resolve(p.compute), engines_dir=args.engines,
                       fp16_engine=args.fp16_engine, holdout_dir=args.holdout, reference_dir=args.reference,
                       out_dir=args.out)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--engines", required=True, help="folder of the INT8 engines (engines/torch_int8/<variant>.pt2)")
    p.add_argument("--fp16-engine", required=True, help="the compiled fp16 engine they are timed against")
    p.add_argument("--holdout", required=True, help="held-out latent set folder")
    p.add_argument("--reference", required=True, help="reference decodes folder")
    p.add_argument("--out", required=True, help="folder of the records (<variant>.json, <variant>.latency.json)")
    entry.run(main, p)
