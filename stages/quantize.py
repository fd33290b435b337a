"""DVC stage `quantize@<variant>`: per-tensor ranges and the Q/DQ ONNX of one INT8 variant."""

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.core.errors import UserError
from vae_engines.quant.quantize import quantize_variant


def main(args):
    params = config.load(args.params)
    if args.variant not in params.int8:
        raise UserError(f"{args.params}: int8 has no variant {args.variant!r}; known: {', '.join(params.int8)}")
    quantize_variant(args.variant, params.int8[args.variant], args.onnx, args.calibration, args.out, args.ranges,
                     fp16_onnx=args.fp16)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--variant", required=True)
    p.add_argument("--onnx", required=True, help="fp32 ONNX")
    p.add_argument("--fp16", default=None, help="fp16 ONNX (needed by auto variants with target_reference: fp16)")
    p.add_argument("--calibration", required=True, help="calibration latent set directory")
    p.add_argument("--out", required=True, help="Q/DQ ONNX path")
    p.add_argument("--ranges", required=True, help="ranges JSON path")
    entry.run(main, p)
