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

`fp8=True` makes the same engine in FP8 (float8 e4m3fn, issue 36 item 5) from the same ranges:
activation scale range / 448, weights per output channel with scale max |w| / 448, as
TensorRT's explicit FP8 quantization (QuantizeLinear to FLOAT8E4M3FN, saturating) computes them,
with quant.qdq's own rounding (quantized_weight), so an FP8 variant's graph (params `format: fp8`)
and its engine hold the same codes. The fused placement's int8 skip has no FP8 form here: such a
record is refused. An FP8 variant's engine never promotes Hopper's reduced-precision fp8 sums
(FP8_VARIANT_ACC).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_engines.core.choices import QuantFormat
from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import
from vae_engines.model.fused import LayerQuant, layer_specs
from vae_engines.quant.qdq import activation_scale, int8_weight, quantized_weight

torch = lazy_import("torch")

# An FP8 variant's engine: Hopper's fp8 sums never promoted to fp32 (fp8_acc 0). On the lent H100 that
# package decoded 60 s in 10.91 ms against 13.2-13.4 ms promoted (slower than INT8's 12.17), and its
# quality moved by -0.01 dB (benchmarks/results/README.md, "FP8 engines beside INT8 and fp16").
FP8_VARIANT_ACC = 0


def fp8_weight(weight: Any, axis: int, scale_type: Any = np.float32) -> tuple[Any, np.ndarray]:
    """Per-channel float8 e4m3fn of `weight` (a float tensor) along `axis`: (codes, scale), scale =
    max |w| / 448 as stored in `scale_type`, codes rounded against that stored scale."""
    codes, scale = quantized_weight(weight.numpy(), axis, scale_type, QuantFormat.FP8)
    return torch.from_numpy(codes.view(np.uint8)).view(torch.float8_e4m3fn), scale


def _int8_layer(conv: Any, transposed: bool, input_amax: float, skip_amax: float | None,
                scale_type: Any, fp8: bool = False, fp8_acc: int = -1) -> LayerQuant:
    """One layer's LayerQuant: quant.qdq's per-output-channel int8 weights (axis 1 for a
    ConvTranspose's [I, O, k]) and activation scales, in `scale_type`; FP8's where `fp8`."""
    weight = conv.weight.detach().float().cpu()
    if fp8:
        q, scale = fp8_weight(weight, 1 if transposed else 0, scale_type)
        input_scale = activation_scale(input_amax, scale_type, QuantFormat.FP8)
        return LayerQuant(float(input_scale), q, torch.from_numpy(scale.astype(np.float32)), 0.0, fp8=True,
                          fp8_acc=fp8_acc)
    q, scale = int8_weight(weight.numpy(), 1 if transposed else 0, scale_type)
    skip = 0.0 if skip_amax is None else float(activation_scale(skip_amax, scale_type))
    return LayerQuant(float(activation_scale(input_amax, scale_type)), torch.from_numpy(q),
                      torch.from_numpy(scale.astype(np.float32)), skip)


def layer_quant(decoder: Any, record: dict, fp8: bool = False, fp8_acc: int = -1) -> dict[str, LayerQuant]:
    """layer name -> LayerQuant for every int8 layer of the variant `record` (a ranges.json); in
    FP8 where `fp8` (module docstring), its sums promoted as fp8_acc says (model.fused.LayerQuant)."""
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
        if layer.get("skip_quantized") and fp8:
            raise UserError(f"{record.get('variant')}: the fused placement's int8 skip has no FP8 engine here; "
                            "make FP8 engines from a variant with the default placement")
        if layer.get("skip_quantized"):
            if not layer.get("skip"):
                raise UserError(f"{record.get('variant')}: its ranges file predates the skip tensor names; "
                                "re-run its quantize stage (dvc repro)")
            skip = amax[layer["skip"]]
        out[layer["name"]] = _int8_layer(conv, layer["op_type"] == "ConvTranspose", amax[layer["input"]], skip,
                                         scale_type, fp8, fp8_acc)
    return out


def variant_quant(decoder: Any, record: dict) -> dict[str, LayerQuant]:
    """layer_quant in the variant's own format (its record's `format`: int8, or fp8 with its sums
    never promoted, FP8_VARIANT_ACC): the engine of exactly the variant's Q/DQ graph."""
    return layer_quant(decoder, record, fp8=record.get("format") == "fp8", fp8_acc=FP8_VARIANT_ACC)


def observed_quant(decoder: Any, latents: list[Any], fp8: bool = False, fp8_acc: int = -1) -> dict[str, LayerQuant]:
    """Every layer int8 (FP8 where `fp8`), each input's range the largest |x| it saw while
    `decoder` decoded `latents` (minmax over them), fp16 scales: an INT8 engine for benchmarks and
    tests of the kernels -- not a calibrated variant (those come from layer_quant)."""
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
                                   np.float16, fp8, fp8_acc) for spec in specs}
