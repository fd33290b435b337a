"""DVC stage `compile_int8@<variant>`: the INT8 engine of an INT8 variant for the compute
device (fused kernels: int8 tensor-core convolutions with the variant's own ranges and int8
layers, read from its ranges record) and the engine's record. Its recipe reaches it through
that record, so a changed recipe rebuilds it and no other variant's engine."""

from vae_engines.core import device, entry, params
from vae_engines.compiled.build import compile_int8_engine


def main(args):
    p = params.load(args.params)
    compile_int8_engine(args.decoder, args.variant, args.ranges, p.compile.mode, device=device.resolve(p.compute),
                        profile=p.profile, out=args.out, tiles_json=args.tiles,
                        calibration_dir=args.calibration)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--decoder", required=True, help="the folded decoder (engines/decoder.safetensors, from export)")
    p.add_argument("--variant", required=True, help="the INT8 variant")
    p.add_argument("--ranges", required=True, help="its ranges record (engines/onnx/<variant>.ranges.json)")
    p.add_argument("--tiles", help="the tune stage's record (engines/torch/tiles.json); without it a fused "
                   "engine times its layers itself")
    p.add_argument("--calibration", help="the calibration windows (data/calibration): the build check decodes one")
    p.add_argument("--out", required=True, help="package path (its record goes beside it, .json)")
    entry.run(main, p)
