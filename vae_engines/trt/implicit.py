"""The reference project's path, for TensorRT 10.x users: implicit INT8 from this project's
ranges, with no calibration on the GPU.

The reference project's 1.64x over fp16 came from implicit INT8 (IInt8EntropyCalibrator2 on
TensorRT 10.13): the builder gets INT8 and FP16 flags and a dynamic range for every tensor,
and picks INT8 kernels per layer where that is faster. TensorRT deprecated it in 10.1 and
removed it in 11.0; TensorRT-RTX never had it. Here the ranges come from the variant's
calibrator (quant.quantize collects every tensor's statistics for an implicit variant), are
set as dynamic ranges on the weakly typed fp32 network, and the layers the recipe keeps in
float are pinned to fp16 by precision constraints.

`network_ranges` maps the range table onto the parsed network's tensors: a tensor named
like an ONNX tensor takes its range; one the parser made (the reshapes around 1-D
convolutions) takes the range of the tensor it reshapes. Its coverage can be checked with
any parser, TensorRT-RTX's included, which is how it is checked where full TensorRT cannot
be installed.
"""

from __future__ import annotations

from typing import Any

from vae_engines.core.errors import UserError

PASS_THROUGH = ("SHUFFLE", "UNSQUEEZE", "SQUEEZE", "IDENTITY", "SLICE")  # layers that only move values


def network_ranges(network: Any, amax: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """(range per network tensor, tensors left without one), for the network input and
    every layer output that is not a constant (TensorRT quantizes weights itself)."""
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    moves = []  # (input, output) of the layers that only move values: equal ranges
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = str(layer.type).split(".")[-1]
        outputs = [layer.get_output(j).name for j in range(layer.num_outputs)]
        if kind != "CONSTANT":
            names += outputs
        if kind in PASS_THROUGH and layer.num_inputs and layer.get_input(0) is not None:
            moves += [(layer.get_input(0).name, out) for out in outputs]
    ranges = {name: amax[name] for name in names if name in amax}
    changed = True
    while changed:  # across reshapes, forwards (a reshaped tensor) and backwards (a raw 2-D conv output)
        changed = False
        for a, b in moves:
            for src, dst in ((a, b), (b, a)):
                if src in ranges and dst not in ranges:
                    ranges[dst] = ranges[src]
                    changed = True
    return {n: ranges[n] for n in names if n in ranges}, [n for n in names if n not in ranges]


def pinned_layers(network: Any, nodes: list[str]) -> list[Any]:
    """The network layers the ONNX parser made for `nodes` (convolutions kept in float)."""
    wanted = set(nodes)
    return [network.get_layer(i) for i in range(network.num_layers)
            if network.get_layer(i).name in wanted or network.get_layer(i).name.split("_output")[0] in wanted]


def apply_implicit_int8(backend: Any, network: Any, config: Any, recipe: dict) -> dict:
    """Set dynamic ranges, INT8 + FP16 and fp16 pins on a parsed weakly typed network.

    Refused in one line where implicit INT8 does not exist (TensorRT 11, TensorRT-RTX)."""
    trt = backend.trt
    if backend.name != "tensorrt" or not hasattr(trt.BuilderFlag, "INT8") or \
            not hasattr(trt.ITensor, "set_dynamic_range"):
        raise UserError(f"implicit INT8 is not available with {backend.name} {backend.version}: it needs full "
                        "TensorRT 10.x (TensorRT 11 removed it; TensorRT-RTX never had it); set quantization: "
                        "explicit for this variant")
    ranges, missing = network_ranges(network, recipe["amax"])
    if missing:
        raise UserError(f"the variant's range table has no range for {len(missing)} network tensor(s), e.g. "
                        f"{missing[0]!r}; re-run its quantize stage (dvc repro)")
    tensors = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors.update({layer.get_output(j).name: layer.get_output(j) for j in range(layer.num_outputs)})
    for name, amax in ranges.items():
        tensors[name].set_dynamic_range(-float(amax), float(amax))
    config.set_flag(trt.BuilderFlag.INT8)
    config.set_flag(trt.BuilderFlag.FP16)
    pinned = pinned_layers(network, recipe.get("kept_nodes", []))
    for layer in pinned:
        layer.precision = trt.float16
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float16)
    if pinned:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return {"dynamic_ranges": len(ranges), "pinned_fp16": [layer.name for layer in pinned]}
