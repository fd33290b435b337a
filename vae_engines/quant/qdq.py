"""Explicit Q/DQ INT8 placed the way TensorRT wants it, written directly into the graph.

ORT's quantize_static makes a model TensorRT either refuses or runs slowly: by default it
quantizes biases to int32 (TensorRT rejects DequantizeLinear on int32) and puts Q/DQ on
conv outputs as well as inputs, which splits the conv + Snake + residual Add fusions
TensorRT would otherwise make. So the placement is done here, following TensorRT's
explicit-quantization guide:

- every Conv / ConvTranspose that is not kept in float gets Q/DQ on its activation input
  (per-tensor, symmetric int8, zero point 0) and an int8 weight initializer behind a
  per-channel DequantizeLinear on the output-channel axis (axis 0 for Conv's [O, I, k],
  axis 1 for ConvTranspose's [I, O, k]);
- outputs and Snake get no Q/DQ; biases stay float;
- a kept layer is left untouched and runs in the network's float type.

Two placements (PLACEMENTS, params `placement`):

- conv_inputs: the above, on every selected layer.
- fused: TensorRT's placement rules applied to this network. A ConvTranspose does not fuse
  a following Q and runs INT8-in / float-out (NVIDIA/TensorRT#2597, #1699), so it stays in
  float; the residual Add's skip input gets Q/DQ too, because the precision of an Add's
  other input decides whether the convolution before it can fuse the Add and write INT8
  (TensorRT's Q/DQ placement recommendations for residual connections); Snake stays in
  float (no INT8 kernel fuses an unusual activation: #3385). A skip input is quantized
  only where the convolution that feeds its Add is.

Scales are computed in float32 and stored in the variant's float type; int8 weights are
rounded against the stored scale, so what the graph dequantizes is exactly q * scale.
`activation_scale` and `quantized_weight` are shared with the PyTorch fake-quantization used by
range search and sensitivity, which therefore computes exactly what these graphs say, and with
the fused engines (compiled.int8).

Two formats (FORMATS, a variant's `format`): int8 (the above) and fp8, float8 e4m3fn with the
same placement and the same ranges, each scale the range over 448 (e4m3's largest finite
value) instead of 127, codes rounded to nearest even and saturated, zero points float8 0, as
ONNX's QuantizeLinear to FLOAT8E4M3FN (opset 19) and TensorRT's explicit FP8 quantization
compute them. ONNX Runtime's CPU provider runs these graphs (a test holds it to
graph.execute's reading of them).

A "layer" is named after its weight initializer without `.weight` (`block.0.conv_t1`),
which is stable across exports and readable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from vae_engines.core.choices import FP8_MAX, Placement, QuantFormat
from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import

onnx = lazy_import("onnx")

QUANTIZABLE = ("Conv", "ConvTranspose")
INT8_MAX = 127


@dataclass(frozen=True)
class Format:
    """What one quantized format stores: its largest code, its numpy type and its ONNX type."""

    largest: float
    dtype: Any
    onnx_type: int  # onnx.TensorProto element type

    def codes(self, x: np.ndarray) -> np.ndarray:
        """float32 `x` (already divided by its scale) as this format's codes: rounded to
        nearest even and saturated."""
        if self.dtype == np.int8:
            return np.clip(np.rint(x), -self.largest, self.largest).astype(np.int8)
        return np.clip(x, -self.largest, self.largest).astype(self.dtype)

    def tensor(self, codes: np.ndarray, name: str) -> Any:
        """An ONNX initializer holding `codes` (raw bytes: any onnx >= 1.17 reads float8 so)."""
        return onnx.helper.make_tensor(name, self.onnx_type, list(codes.shape),
                                       np.ascontiguousarray(codes).view(np.uint8).tobytes(), raw=True)


FORMATS: dict[QuantFormat, Format] = {
    QuantFormat.INT8: Format(INT8_MAX, np.int8, 3),  # TensorProto.INT8
    QuantFormat.FP8: Format(FP8_MAX, ml_dtypes.float8_e4m3fn, 17),  # TensorProto.FLOAT8E4M3FN
}


@dataclass(frozen=True)
class Skip:
    """The skip input of the residual Add a layer's output feeds."""

    node: str  # the Add
    index: int  # which of its inputs is the skip
    tensor: str


@dataclass(frozen=True)
class Layer:
    name: str  # weight initializer name without ".weight"
    node: str  # ONNX node name
    op_type: str
    activation: str  # the input tensor that gets Q/DQ
    weight: str  # the weight initializer
    skip: Skip | None = None  # the residual Add this layer feeds, if any

    @property
    def axis(self) -> int:
        """The weight's output-channel axis: per-channel scales run along it."""
        return 0 if self.op_type == "Conv" else 1


def _residual_skip(node: Any, consumers: dict[str, list[Any]], producers: dict[str, Any],
                   order: dict[str, int]) -> Skip | None:
    """The skip input of the residual Add `node`'s output ends: an Add whose other input is
    not a Snake's product (a Snake ends in Add(x, Mul(...))) and was made earlier in the
    graph -- the unit's input, from a ConvTranspose or the previous unit's Add -- while
    `node` closes the unit's branch."""
    for add in consumers.get(node.output[0], []):
        if add.op_type != "Add":
            continue
        index = 0 if add.input[1] == node.output[0] else 1
        other = producers.get(add.input[index])
        if other is not None and other.op_type != "Mul" and order[other.name] < order[node.name]:
            return Skip(add.name, index, add.input[index])
    return None


def quantizable_layers(model: Any) -> list[Layer]:
    """Conv and ConvTranspose nodes with initializer weights, in network (graph) order."""
    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    layers = []
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE and len(node.input) > 1 and node.input[1] in inits:
            weight = node.input[1]
            name = weight[: -len(".weight")] if weight.endswith(".weight") else weight
            layers.append(Layer(name, node.name, node.op_type, node.input[0], weight,
                                _residual_skip(node, consumers, producers, order)))
    return layers


@dataclass(frozen=True)
class QdqPlan:
    """What a placement quantizes: `layers` (input and weight) and the residual skip
    inputs of `skips` (each a quantized layer's Skip)."""

    layers: list[Layer]
    skips: list[Layer]

    def tensors(self) -> list[str]:
        """Every activation tensor the plan quantizes (each needs a range)."""
        return list(dict.fromkeys([l.activation for l in self.layers] + [l.skip.tensor for l in self.skips]))


def conv_inputs_plan(selected: list[Layer]) -> QdqPlan:
    return QdqPlan(list(selected), [])


def fused_plan(selected: list[Layer]) -> QdqPlan:
    layers = [l for l in selected if l.op_type != "ConvTranspose"]
    return QdqPlan(layers, [l for l in layers if l.skip is not None])


PLACEMENTS: dict[Placement, Callable[[list[Layer]], QdqPlan]] = {
    Placement.CONV_INPUTS: conv_inputs_plan,
    Placement.FUSED: fused_plan,
}


def skip_tensors(layers: list[Layer]) -> list[str]:
    return [l.skip.tensor for l in layers if l.skip is not None]


def select_layers(layers: list[Layer], *, keep_first: int = 0, keep_last: int = 0,
                  exclude_nodes: tuple[str, ...] = (), exclude_op_types: tuple[str, ...] = ()) -> list[Layer]:
    """The layers to quantize: all but the first / last few and the excluded ones.

    exclude_nodes matches a layer name or an ONNX node name; a name that matches nothing
    is an error (a typo would otherwise silently quantize the layer).
    """
    n = len(layers)
    if keep_first + keep_last > n:
        raise UserError(f"keep_first + keep_last = {keep_first + keep_last} but the model has only {n} "
                        "convolution layers; lower them")
    known = {l.name for l in layers} | {l.node for l in layers}
    for name in exclude_nodes:
        if name not in known:
            sample = ", ".join(l.name for l in layers[:3])
            raise UserError(f"exclude_nodes: {name!r} is not a convolution layer of this model; use layer names "
                            f"like {sample} (see engines/onnx/<variant>.ranges.json)")
    kept = set(range(keep_first)) | set(range(n - keep_last, n))
    return [l for i, l in enumerate(layers)
            if i not in kept and l.name not in exclude_nodes and l.node not in exclude_nodes
            and l.op_type not in exclude_op_types]


def activation_scale(amax: float, scale_type: Any = np.float32, fmt: QuantFormat = QuantFormat.INT8) -> np.ndarray:
    """The per-tensor scale of an activation with range [-amax, amax] in format `fmt`, as stored."""
    return np.array(amax / FORMATS[fmt].largest, dtype=np.float32).astype(scale_type)


def quantized_weight(weight: np.ndarray, axis: int, scale_type: Any = np.float32,
                     fmt: QuantFormat = QuantFormat.INT8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel `fmt` codes of `weight` along `axis`: (q, scale), q rounded
    against the stored scale so that q * scale is what the graph computes."""
    largest = FORMATS[fmt].largest
    reduce = tuple(d for d in range(weight.ndim) if d != axis)
    amax = np.abs(weight).max(axis=reduce).astype(np.float32)
    scale = np.where(amax > 0, amax / largest, 1.0).astype(np.float32).astype(scale_type)
    shape = [1] * weight.ndim
    shape[axis] = -1
    return FORMATS[fmt].codes(weight.astype(np.float32) / scale.astype(np.float32).reshape(shape)), scale


def int8_weight(weight: np.ndarray, axis: int, scale_type: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """quantized_weight in int8."""
    return quantized_weight(weight, axis, scale_type, QuantFormat.INT8)


def _activation_qdq(graph: Any, tensor: str, amax: float, scale_type: Any, label: str,
                    fmt: QuantFormat) -> tuple[list, str]:
    """(Q and DQ nodes, the dequantized tensor's name) for one activation tensor."""
    scale = onnx.numpy_helper.from_array(activation_scale(amax, scale_type, fmt), f"{tensor}_scale")
    zero = FORMATS[fmt].tensor(np.zeros((), dtype=FORMATS[fmt].dtype), f"{tensor}_zero_point")
    graph.initializer.extend([scale, zero])
    return [onnx.helper.make_node("QuantizeLinear", [tensor, scale.name, zero.name], [f"{tensor}_quantized"],
                             name=f"{label}_quantize"),
            onnx.helper.make_node("DequantizeLinear", [f"{tensor}_quantized", scale.name, zero.name],
                             [f"{tensor}_dequantized"], name=f"{label}_dequantize")], f"{tensor}_dequantized"


def _weight_qdq(graph: Any, node: Any, layer: Layer, inits: dict, scale_type: Any, fmt: QuantFormat) -> Any:
    """The DequantizeLinear of `layer`'s quantized weight (initializers added to `graph`)."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    if layer.op_type == "ConvTranspose" and group != 1:
        raise UserError(f"{layer.name}: grouped ConvTranspose has no single output-channel axis; exclude it")
    q, scale = quantized_weight(onnx.numpy_helper.to_array(inits[layer.weight]), layer.axis, scale_type, fmt)
    wq = FORMATS[fmt].tensor(q, f"{layer.weight}_quantized")
    ws = onnx.numpy_helper.from_array(scale, f"{layer.weight}_scale")
    wz = FORMATS[fmt].tensor(np.zeros(scale.shape, dtype=FORMATS[fmt].dtype), f"{layer.weight}_zero_point")
    graph.initializer.extend([wq, ws, wz])
    return onnx.helper.make_node("DequantizeLinear", [wq.name, ws.name, wz.name], [f"{layer.weight}_dequantized"],
                            name=f"{layer.name}.weight_dequantize", axis=layer.axis)


def insert_qdq(model: Any, plan: QdqPlan | list[Layer], amax: dict[str, float], scale_type: Any = np.float32,
               fmt: QuantFormat = QuantFormat.INT8) -> Any:
    """A copy of the float32 `model` with Q/DQ where `plan` says (a list of layers: their
    inputs and weights; see the module docstring), in format `fmt`.

    amax: per activation tensor, from calibration. scale_type: np.float16 for a graph that
    float16.float16_graph converts next (Q/DQ then run in fp16; opset >= 19).
    """
    plan = plan if isinstance(plan, QdqPlan) else conv_inputs_plan(plan)
    missing = [t for t in plan.tensors() if t not in amax]
    if missing:
        raise UserError(f"no calibrated range for {missing[0]}; the ranges file does not belong to this model: run "
                        "dvc repro")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    by_node = {n.name: n for n in graph.node}
    before: dict[str, list[Any]] = {}  # node name -> Q/DQ nodes to insert before it
    dequantized: dict[str, str] = {}  # activation tensor -> its dequantized twin
    inputs = [(l.node, 0, l.activation, l.name + ".input") for l in plan.layers]
    inputs += [(l.skip.node, l.skip.index, l.skip.tensor, l.name + ".skip") for l in plan.skips]
    for node_name, index, tensor, label in inputs:
        if tensor not in dequantized:
            nodes, dequantized[tensor] = _activation_qdq(graph, tensor, amax[tensor], scale_type, label, fmt)
            before.setdefault(node_name, []).extend(nodes)
        by_node[node_name].input[index] = dequantized[tensor]
    for layer in plan.layers:
        node = by_node[layer.node]
        before.setdefault(layer.node, []).append(_weight_qdq(graph, node, layer, inits, scale_type, fmt))
        node.input[1] = f"{layer.weight}_dequantized"
    used = {i for n in graph.node for i in n.input} | {i for pre in before.values() for n in pre for i in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    ordered = []
    for node in graph.node:
        ordered.extend(before.get(node.name, []))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.value_info[:]  # stale float types would mislead shape inference
    if out.opset_import[0].version < 13:
        raise UserError("per-channel DequantizeLinear needs opset >= 13; raise export.opset")
    if fmt == QuantFormat.FP8 and out.opset_import[0].version < 19:
        raise UserError("float8 Q/DQ needs opset >= 19; raise export.opset")
    return out
