"""AIMET-ONNX's post-training quantization of the fp32 ONNX, run inside AIMET's own virtualenv
(benchmarks/peers.py calls it with --aimet-python; AIMET is not a dependency of this project).

    <aimet venv>/bin/python benchmarks/peer_aimet.py --onnx FP32.onnx --calibration LATENTS.npy \
        --out OUT.onnx --recipe defaults|minmax|tf_enhanced|seqmse

The virtualenv: `python3 -m venv V && V/bin/pip install torch==2.13.0 && V/bin/pip install aimet-onnx`
(aimet-onnx 2.42 then upgrades torch to a CUDA build of 2.14, about 6 GB; it runs on the CPU all
the same); then `python benchmarks/peers.py --aimet-python V/bin/python`.

Recipes (aimet_onnx.QuantizationSimModel, 8-bit weights and activations, every calibration
latent used by compute_encodings; the graph comes out of `to_onnx_qdq` with signed activations):
- defaults: AIMET's own placement and ranges (min-max, every op's output quantized, asymmetric
  activations, per-tensor weights, biases quantized);
- minmax: TensorRT's placement, as every other row of peers.py: only the convolutions' data
  inputs and weights quantized, activations symmetric (zero point 0), weights per output channel,
  biases in float; min-max ranges;
- tf_enhanced: the same placement with AIMET's SQNR-based range search for activations
  (QuantScheme.post_training_tf_enhanced);
- seqmse: minmax plus AIMET's sequential MSE (apply_seq_mse: each layer's weight ranges chosen to
  minimise its output error on the calibration data, before compute_encodings).
AdaRound (apply_adaround) is not a recipe: aimet-onnx 2.42 optimises only convolutions with 4-D
weights (`AdaroundOptimizer._is_supported_layer_type`: "Only 2d conv/convtranspose is supported")
and skips this decoder's Conv1d without a word; on this graph it ran in under a second and left
every weight quantizer as it was (checked 2026-12-06). Cross-layer equalization stops at Snake,
which sits between every pair of this decoder's convolutions.
Writes the quantized ONNX and prints one JSON line: the recipe and AIMET's version.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
from aimet_onnx import apply_seq_mse
from aimet_onnx.common.defs import QuantScheme
from aimet_onnx.quantsim import QuantizationSimModel

TENSORRT_CONFIG = {  # AIMET's quantsim config: symmetric int8, per-channel weights, float biases
    "defaults": {"ops": {"is_output_quantized": "True", "is_symmetric": "True"},
                 "params": {"is_quantized": "True", "is_symmetric": "True"},
                 "strict_symmetric": "False", "unsigned_symmetric": "False", "per_channel_quantization": "True"},
    "params": {"bias": {"is_quantized": "False"}},
    "op_type": {}, "supergroups": [], "model_input": {"is_input_quantized": "True"}, "model_output": {},
}


def conv_inputs(model: onnx.ModelProto) -> set[str]:
    """The data inputs and weights of every convolution: what TensorRT's placement quantizes."""
    return {name for node in model.graph.node if node.op_type in ("Conv", "ConvTranspose") for name in node.input[:2]}


def quantized(model: onnx.ModelProto, latents: np.ndarray, recipe: str) -> onnx.ModelProto:
    inputs = [{"latent": x[None]} for x in latents]
    if recipe == "defaults":
        sim = QuantizationSimModel(model)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "tensorrt.json"
            config.write_text(json.dumps(TENSORRT_CONFIG))
            scheme = QuantScheme.post_training_tf_enhanced if recipe == "tf_enhanced" else QuantScheme.min_max
            sim = QuantizationSimModel(model, quant_scheme=scheme, config_file=str(config))
        keep = conv_inputs(model)
        for name, quantizer in sim.qc_quantize_op_dict.items():
            if name not in keep:
                quantizer.enabled = False
        if recipe == "seqmse":
            apply_seq_mse(sim, inputs)
    sim.compute_encodings(inputs)
    return sim.to_onnx_qdq(force_activation_as="signed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True)
    p.add_argument("--calibration", required=True, help="latents [N, C, T] as .npy")
    p.add_argument("--out", required=True)
    p.add_argument("--recipe", choices=["defaults", "minmax", "tf_enhanced", "seqmse"], required=True)
    args = p.parse_args()
    latents = np.load(args.calibration).astype(np.float32)
    onnx.save(quantized(onnx.load(args.onnx), latents, args.recipe), args.out)
    print(json.dumps({"recipe": args.recipe, "aimet": version("aimet-onnx")}))


if __name__ == "__main__":
    main()
