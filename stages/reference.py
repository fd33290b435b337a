"""DVC stage `reference`: fp32 and fp16 decodes of the held-out data (fp16 computed in
fp16), once for every variant's evaluation."""

from vae_engines.core import device, entry, params
from vae_engines.measure.evaluate import reference_outputs


def main(args):
    p = params.load(args.params)
    reference_outputs(args.fp32, args.fp16, args.holdout, args.out, device.resolve(p.compute))


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--fp32", required=True, help="fp32 ONNX")
    p.add_argument("--fp16", required=True, help="fp16 ONNX")
    p.add_argument("--holdout", required=True, help="held-out latent set folder")
    p.add_argument("--out", required=True, help="output folder")
    entry.run(main, p)
