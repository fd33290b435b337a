"""NNCF's post-training quantization of the fp32 ONNX, run inside NNCF's own virtualenv
(benchmarks/peers.py calls it with --nncf-python; NNCF is not a dependency of this project).

    <nncf venv>/bin/python benchmarks/peer_nncf.py --onnx FP32.onnx --calibration LATENTS.npy \
        --out OUT.onnx --recipe defaults|minmax|smoothquant

The virtualenv: `python3 -m venv V && V/bin/pip install nncf==3.4.0 onnx==<ours> onnxruntime==<ours>`
(no torch needed for NNCF's ONNX backend); then `python benchmarks/peers.py --nncf-python V/bin/python`.

Recipes (NNCF 3.4's ONNX backend, `nncf.quantize`, every calibration latent used):
- defaults: NNCF's own choices (its ranges and placement: it also quantizes Snake's Mul and Add);
- minmax: MinMax range estimators for activations, the overflow fix off (it halves weight
  ranges for old x86 int8 instructions, not for a GPU), and only convolutions quantized (every
  other op type in NNCF's ignored scope): TensorRT's placement, as every other row of peers.py;
- smoothquant: minmax plus SmoothQuant on convolutions, alpha 0.5 (a per-channel Mul before each
  convolution moving activation range into the weights; NNCF runs SmoothQuant only for
  model_type TRANSFORMER, so that is set).
Writes the quantized ONNX and prints one JSON line: the recipe and NNCF's version.
"""

from __future__ import annotations

import argparse
import json

import nncf
import numpy as np
import onnx
from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,
                                                   OverflowFix)
from nncf.quantization.range_estimator import RangeEstimatorParametersSet


def advanced(recipe: str) -> AdvancedQuantizationParameters | None:
    if recipe == "defaults":
        return None
    smooth = AdvancedSmoothQuantParameters(convolution=0.5 if recipe == "smoothquant" else -1)
    return AdvancedQuantizationParameters(overflow_fix=OverflowFix.DISABLE, smooth_quant_alphas=smooth,
                                          activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", required=True)
    p.add_argument("--calibration", required=True, help="latents [N, C, T] as .npy")
    p.add_argument("--out", required=True)
    p.add_argument("--recipe", choices=["defaults", "minmax", "smoothquant"], required=True)
    args = p.parse_args()
    latents = np.load(args.calibration).astype(np.float32)
    dataset = nncf.Dataset([{"latent": x[None]} for x in latents])
    model = onnx.load(args.onnx)
    others = sorted({n.op_type for n in model.graph.node} - {"Conv", "ConvTranspose"})
    kwargs = {}
    if args.recipe != "defaults":
        kwargs["ignored_scope"] = nncf.IgnoredScope(types=others)
    if args.recipe == "smoothquant":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    quantized = nncf.quantize(model, dataset, subset_size=len(latents), advanced_parameters=advanced(args.recipe),
                              **kwargs)
    onnx.save(quantized, args.out)
    print(json.dumps({"recipe": args.recipe, "nncf": nncf.__version__}))


if __name__ == "__main__":
    main()
