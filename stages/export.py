"""DVC stage `export`: the folded decoder as fp32 ONNX, and its fp16 graph."""

from vae_engines.core import entry, params
from vae_engines.model.export import export_model


def main(args):
    p = params.load(args.params)
    export_model(p.model, p.export, args.fp32, args.fp16)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--fp32", required=True, help="fp32 ONNX path")
    p.add_argument("--fp16", required=True, help="fp16 ONNX path")
    entry.run(main, p)
