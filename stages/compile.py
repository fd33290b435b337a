"""DVC stage `compile@<precision>`: a compiled PyTorch engine of the decoder for the compute
device -- fused kernels or Inductor's (compile.kernels) -- and its record."""

from vae_engines.core import device, entry, params
from vae_engines.core.choices import Precision
from vae_engines.compiled.build import compile_engine


def main(args):
    p = params.load(args.params)
    compile_engine(args.decoder, Precision(args.precision), p.compile.mode, device=device.resolve(p.compute),
                   profile=p.profile, out=args.out, kernels=p.compile.kernels, tiles_json=args.tiles)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--decoder", required=True, help="the folded decoder (engines/decoder.safetensors, from export)")
    p.add_argument("--precision", required=True, choices=[x.value for x in Precision], help="the engine's precision")
    p.add_argument("--tiles", help="the tune stage's record (engines/torch/tiles.json); without it a fused "
                   "engine times its layers itself")
    p.add_argument("--out", required=True, help="package path (its record goes beside it, .json)")
    entry.run(main, p)
