"""DVC stage `export`: the folded decoder as fp32 ONNX and its fp16 graph, and as a safetensors
file the PyTorch engines' stages read (model.folded)."""

from vae_engines.core import entry, params
from vae_engines.model.export import export_model


def main(args):
    p = params.load(args.params)
    export_model(p.model, p.export, args.fp32, args.fp16, args.decoder)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--fp32", required=True, help="fp32 ONNX path")
    p.add_argument("--fp16", required=True, help="fp16 ONNX path")
    p.add_argument("--decoder", required=True, help="the folded decoder for the PyTorch engines' stages (safetensors)")
    entry.run(main, p)
