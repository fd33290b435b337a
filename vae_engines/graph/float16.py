"""Convert a float32 graph (plain or with Q/DQ) to fp16, for strongly typed engines.

TensorRT 11 and TensorRT-RTX build strongly typed networks: a layer runs in the type its
ONNX tensors have, so fp16 comes from an fp16 graph, not from a builder flag. This pass
turns every float32 tensor of the graph into fp16 -- weights, biases, Snake constants,
Q/DQ scales -- and leaves int8 weights and zero points alone. With `float32_io` the graph
keeps float32 input and output (a Cast after the input and before the output), so callers
keep float32 buffers.

Why not onnxconverter-common's float16 converter: it keeps a block list of ops in fp32 and
inserts Casts around them, and it does not know that a QuantizeLinear's input and scale
must share a type (opset >= 19 allows fp16 for both); here the graph is known and small
(Conv, ConvTranspose, Sin, Mul, Add, Q/DQ), so the whole graph converts with no Cast
inside it. A constant beyond fp16's range is an error naming it, never a silent inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import

onnx = lazy_import("onnx")

FP16_MAX = 65504.0
QDQ_MIN_OPSET = 19  # QuantizeLinear / DequantizeLinear accept fp16 inputs and scales from opset 19


def _to_fp16(array: np.ndarray, name: str) -> np.ndarray:
    peak = float(np.abs(array).max()) if array.size else 0.0
    if peak > FP16_MAX:
        raise UserError(f"{name} reaches {peak:.3g}, beyond fp16's range (65504); this checkpoint cannot run with "
                        "float_type fp16 (use float_type: fp32 for its variants)")
    return array.astype(np.float16)


def float16_graph(model: Any, float32_io: bool = True) -> Any:
    """A copy of `model` with every float32 tensor in fp16 (see module docstring)."""
    TensorProto, helper, numpy_helper = onnx.TensorProto, onnx.helper, onnx.numpy_helper  # noqa: N806
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    uses_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    opset = next(o for o in out.opset_import if o.domain in ("", "ai.onnx"))
    if uses_qdq and opset.version < QDQ_MIN_OPSET:
        raise UserError(f"fp16 Q/DQ needs ONNX opset >= {QDQ_MIN_OPSET} (the model has {opset.version}); raise "
                        "export.opset")
    converted = []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init = numpy_helper.from_array(_to_fp16(numpy_helper.to_array(init), init.name), init.name)
        converted.append(init)
    del graph.initializer[:]
    graph.initializer.extend(converted)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(attr.t), node.name)))
    inp, outp = graph.input[0], graph.output[0]
    if float32_io:
        inner_in, inner_out = f"{inp.name}_fp16", f"{outp.name}_fp16"
        for node in graph.node:
            node.input[:] = [inner_in if i == inp.name else i for i in node.input]
            node.output[:] = [inner_out if o == outp.name else o for o in node.output]
        graph.node.insert(0, helper.make_node("Cast", [inp.name], [inner_in], name="input_to_fp16",
                                              to=TensorProto.FLOAT16))
        graph.node.append(helper.make_node("Cast", [inner_out], [outp.name], name="output_to_fp32",
                                           to=TensorProto.FLOAT))
    else:
        inp.type.tensor_type.elem_type = TensorProto.FLOAT16
        outp.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]  # float32 annotations would contradict the new types
    return out
