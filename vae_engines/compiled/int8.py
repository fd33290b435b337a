"""An INT8 engine's layers from an INT8 variant's recipe: the very ranges and weights its
Q/DQ graph carries.

The quantize stage writes each variant's record (engines/onnx/<variant>.ranges.json): per
layer whether it is int8, the tensor whose range quantizes its input, and for the fused
placement the residual skip it reads through int8; the calibrated range of each of those
tensors. `layer_quant` turns that into model.fused.LayerQuant with quant.qdq's own
functions -- activation_scale, and int8_weight for the per-output-channel weights -- in the
variant's scale type (fp16 scales for an fp16 variant, as its graph stores them), so the
engine quantizes with exactly the scales and integer weights of the graph it is measured
against.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import
from vae_engines.model.fused import LayerQuant, layer_specs
from vae_engines.quant.qdq import activation_scale, int8_weight

torch = lazy_import("torch")


def _int8_layer(conv: Any, transposed: bool, input_amax: float, skip_amax: float | None,
                scale_type: Any) -> LayerQuant:
    """One layer's LayerQuant: quant.qdq's per-output-channel int8 weights (axis 1 for a
    ConvTranspose's [I, O, k]) and activation scales, in `scale_type`."""
    q, scale = int8_weight(conv.weight.detach().float().cpu().numpy(), 1 if transposed else 0, scale_type)
    skip = 0.0 if skip_amax is None else float(activation_scale(skip_amax, scale_type))
    return LayerQuant(float(activation_scale(input_amax, scale_type)), torch.from_numpy(q),
                      torch.from_numpy(scale.astype(np.float32)), skip)


def layer_quant(decoder: Any, record: dict) -> dict[str, LayerQuant]:
    """layer name -> LayerQuant for every int8 layer of the variant `record` (a ranges.json)."""
    scale_type = np.float16 if record.get("float_type") == "fp16" else np.float32
    amax = record["amax"]
    out = {}
    for layer in record["layers"]:
        if not layer["int8"]:
            continue
        try:
            conv = decoder.get_submodule(layer["name"])
        except AttributeError:
            raise UserError(f"the variant names layer {layer['name']!r}, which this decoder lacks; the ranges file "
                            "belongs to another model: run dvc repro") from None
        skip = None
        if layer.get("skip_quantized"):
            if not layer.get("skip"):
                raise UserError(f"{record.get('variant')}: its ranges file predates the skip tensor names; "
                                "re-run its quantize stage (dvc repro)")
            skip = amax[layer["skip"]]
        out[layer["name"]] = _int8_layer(conv, layer["op_type"] == "ConvTranspose", amax[layer["input"]], skip,
                                         scale_type)
    return out


def observed_quant(decoder: Any, latents: list[Any]) -> dict[str, LayerQuant]:
    """Every layer int8, each input's range the largest |x| it saw while `decoder` decoded
    `latents` (minmax over them), fp16 scales: an INT8 engine for benchmarks and tests of the
    kernels -- not a calibrated variant (those come from layer_quant)."""
    amax: dict[str, float] = {}
    specs = layer_specs(decoder)

    def observe(name: str) -> Any:
        return lambda module, inputs: amax.__setitem__(name, max(amax.get(name, 0.0), float(inputs[0].abs().max())))
    hooks = [decoder.get_submodule(s.name).register_forward_pre_hook(observe(s.name)) for s in specs]
    try:
        with torch.inference_mode():
            for latent in latents:
                decoder(latent)
    finally:
        for hook in hooks:
            hook.remove()
    return {spec.name: _int8_layer(decoder.get_submodule(spec.name), spec.stride > 0, amax[spec.name], None,
                                   np.float16) for spec in specs}
