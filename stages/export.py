"""DVC stage `export`: the folded decoder as fp32 and fp16 ONNX."""

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.model.export import onnx_from_decoder
from vae_engines.model.oobleck import fold_decoder, load_vae


def main(args):
    params = config.load(args.params)
    loaded = load_vae(params.model)
    decoder = fold_decoder(loaded.vae)
    metadata = {"hop": loaded.hop, "sampling_rate": loaded.sampling_rate, "model": loaded.description,
                "params_hash": config.section_hash(params.model, params.export)}
    onnx_from_decoder(decoder, args.fp32, opset=params.export.opset, precision="fp32", metadata=metadata)
    onnx_from_decoder(decoder, args.fp16, opset=params.export.opset, precision="fp16",
                      float32_io=params.export.fp16_io == "float32", metadata=metadata)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--fp32", required=True, help="fp32 ONNX path")
    p.add_argument("--fp16", required=True, help="fp16 ONNX path")
    entry.run(main, p)
