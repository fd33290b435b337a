"""DVC stage `tune`: each decoder layer's fused-kernel tile, fp16 and int8, timed once on the
compute device; the compiled engines (fp16 and every INT8 variant's) read it."""

from vae_engines.core import device, entry, params
from vae_engines.compiled.build import tune_kernels


def main(args):
    p = params.load(args.params)
    tune_kernels(args.decoder, device=device.resolve(p.compute), profile=p.profile, out=args.out,
                 jobs=p.compute.threads)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--decoder", required=True, help="the folded decoder (engines/decoder.safetensors, from export)")
    p.add_argument("--out", required=True, help="the tiles record (engines/torch/tiles.json)")
    entry.run(main, p)
