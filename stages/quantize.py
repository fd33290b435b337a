"""DVC stage `quantize@<variant>`: ranges, layers kept in float, and the graph of one INT8
variant."""

from vae_engines.core import device, entry, params
from vae_engines.quant.quantize import quantize_variant


def main(args):
    p = params.load(args.params)
    quantize_variant(args.variant, p.variant(args.variant), fp32_onnx=args.onnx, stats_npz=args.stats,
                     calibration_dir=args.calibration, out_onnx=args.out, ranges_json=args.ranges,
                     device=device.resolve(p.compute), float32_io=p.export.fp16_io == "float32")


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--variant", required=True, help="name of the recipe under int8: in params.yaml")
    p.add_argument("--onnx", required=True, help="fp32 ONNX")
    p.add_argument("--stats", required=True, help="activation statistics (.npz)")
    p.add_argument("--calibration", required=True, help="calibration latent set folder")
    p.add_argument("--out", required=True, help="the variant's ONNX")
    p.add_argument("--ranges", required=True, help="ranges JSON path")
    entry.run(main, p)
