"""Run this project's ONNX graphs with PyTorch, in the graph's own types, on the CPU or a GPU.

Why not ONNX Runtime for everything: its CPU provider runs an fp16 graph by casting the
fp16 weights back to fp32 and computing in fp32 (so it cannot measure fp16), and this
project's environments have no ORT GPU provider. `GraphExecutor` runs exactly what the
graph says, node by node:

- Conv / ConvTranspose with the node's pads, strides, dilations, groups, output_padding;
- QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point) into int8's
  [-128, 127] (or uint8's [0, 255]), or x / scale rounded to float8 e4m3fn (to nearest even,
  saturated at +-448; its zero point is 0); DequantizeLinear: (q - zero_point) * scale, in the
  scale's type, per tensor or along `axis`;
- every tensor in its ONNX type. fp16 tensors run on native half kernels where those are
  real (CUDA: cuDNN/cuBLAS half convolutions accumulate in fp32). On the CPU, torch's half
  convolutions are about 170x slower than fp32 (3.3 s against 19 ms for a 64-channel
  k7 conv over 61,440 samples, measured here), so each fp16 op computes in fp32 from fp16
  values and rounds its result to fp16: fp16 storage between ops, fp32 accumulation
  inside them, which is also how TensorRT's fp16 convolution kernels accumulate.
  `describe()` says which of the two ran.

Three extension points serve calibration, range search and sensitivity without rewriting
the graph: `input_hooks` ((node name, input index) -> callable applied to that input:
fake quantization), `weights` (node name -> replacement weight of a convolution) and
`observe` (called with every tensor a node makes, and the graph input: statistics).
`run_until` / `run_from` split a decode at a node, so a prefix computed once can feed many
suffixes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vae_engines.core.choices import FP8_MAX
from vae_engines.core.device import exact_fp32
from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import

torch = lazy_import("torch")
onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

# ONNX TensorProto element types used here
FLOAT, UINT8, INT8, INT32, INT64, FLOAT16, DOUBLE, BFLOAT16, FLOAT8E4M3FN = 1, 2, 3, 6, 7, 10, 11, 16, 17
FLOAT_TYPES = (FLOAT, FLOAT16, BFLOAT16, DOUBLE)
ELEMENTWISE = {
    "Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b, "Div": lambda a, b: a / b,
    "Pow": lambda a, b: a ** b,
}
UNARY = {
    "Sin": "sin", "Cos": "cos", "Neg": "neg", "Exp": "exp", "Sqrt": "sqrt", "Reciprocal": "reciprocal",
    "Tanh": "tanh", "Sigmoid": "sigmoid", "Relu": "relu", "Abs": "abs", "Identity": None,
}
SUPPORTED = sorted({"Conv", "ConvTranspose", "QuantizeLinear", "DequantizeLinear", "Cast", "Constant",
                    *ELEMENTWISE, *UNARY})


@dataclass(frozen=True)
class Node:
    index: int
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict


def quantize(x: Any, scale: Any, zero_point: Any, lo: int, hi: int) -> Any:
    """ONNX QuantizeLinear in fp32 arithmetic; returns the integers as a float32 tensor."""

    q = torch.round(x.float() / scale.float()) + zero_point.float()  # torch.round is half-to-even
    return q.clamp_(lo, hi)


def quantize_fp8(x: Any, scale: Any) -> Any:
    """ONNX QuantizeLinear to float8 e4m3fn (saturate=1) in fp32 arithmetic; the codes as float32."""
    return (x.float() / scale.float()).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float()


def dequantize(q: Any, scale: Any, zero_point: Any) -> Any:
    return (q.float() - zero_point.float()) * scale.float()


def fake_quantize(x: Any, scale: Any) -> Any:
    """dequantize(quantize(x, scale, 0, -128, 127), scale, 0) for a float32 scale, in one
    allocation (adding and subtracting a zero point of 0 is exact, so the result is the same)."""

    return torch.round(x.float().div(scale)).clamp_(-128, 127).mul_(scale)


def fake_quantize_fp8(x: Any, scale: Any) -> Any:
    """dequantize(quantize_fp8(x, scale), scale, 0): fake_quantize's float8 e4m3fn twin."""
    return quantize_fp8(x, scale).mul_(scale)


class GraphExecutor:
    """Decode with an ONNX graph in PyTorch. `decode(latent)` takes numpy [B, C, T].

    device: "cpu" or "cuda" (or a torch.device). half: "auto" (native on CUDA, emulated on
    the CPU), "native" or "emulated".
    """

    def __init__(self, model: Any, device: Any = "cpu", half: str = "auto") -> None:

        self.device = torch.device(device)
        if half not in ("auto", "native", "emulated"):
            raise ValueError(half)
        self.native_half = (self.device.type == "cuda") if half == "auto" else half == "native"
        self.values: dict[str, Any] = {}
        self.types: dict[str, int] = {}
        for init in model.graph.initializer:
            value = np.array(onnx.numpy_helper.to_array(init))
            if init.data_type == FLOAT8E4M3FN:  # float8 codes, exact in float32 (torch reads no ml_dtypes array)
                value = value.astype(np.float32)
            self._set(init.name, torch.from_numpy(value), init.data_type)
        graph_input = model.graph.input[0]
        self.input_name = graph_input.name
        self.input_type = graph_input.type.tensor_type.elem_type
        self.types[self.input_name] = self.input_type
        self.output_name = model.graph.output[0].name
        self.nodes: list[Node] = []
        unknown = set()
        for index, node in enumerate(model.graph.node):
            attrs = {a.name: _attribute(a) for a in node.attribute}
            if node.op_type not in SUPPORTED or node.domain not in ("", "ai.onnx"):
                unknown.add(node.op_type)
            self.nodes.append(Node(index, node.name, node.op_type, tuple(node.input), tuple(node.output), attrs))
        if unknown:
            raise UserError(f"the PyTorch graph executor does not implement {', '.join(sorted(unknown))}; it runs "
                            f"{', '.join(SUPPORTED)} (the ops this project's exports use)")
        self.by_name = {n.name: n for n in self.nodes}
        last: dict[str, int] = {}
        for node in self.nodes:
            for name in node.inputs:
                last[name] = node.index
        last[self.output_name] = len(self.nodes)
        self.last_use = last
        self.folded = self._fold_constants()

    def _fold_constants(self) -> set[int]:
        """Run once, here, the nodes whose inputs are all weights (a weight's
        DequantizeLinear, a Constant): their outputs join the initializers, and decodes skip
        them. Returns their indices."""
        folded = set()
        with torch.inference_mode():
            for node in self.nodes:
                if all(not name or name in self.values for name in node.inputs):
                    result, elem = self._apply(node, [self.values[n] if n else None for n in node.inputs])
                    self._set(node.outputs[0], result, elem)
                    folded.add(node.index)
        return folded

    # -- types ---------------------------------------------------------------------------
    def _store(self, tensor: Any, elem: int) -> Any:
        """A computed tensor in the storage form of ONNX type `elem` (rounded as that type)."""

        if elem == FLOAT16:
            return tensor.half() if self.native_half else tensor.half().float()
        if elem == BFLOAT16:
            return tensor.bfloat16() if self.native_half else tensor.bfloat16().float()
        if elem in (FLOAT, DOUBLE):
            return tensor.float()
        if elem in (INT8, UINT8, FLOAT8E4M3FN):
            return tensor.float()  # integers and float8 codes held exactly in float32
        if elem in (INT32, INT64):
            return tensor.to(torch.int64)
        raise UserError(f"tensor type {elem} is not supported by the PyTorch graph executor")

    def _set(self, name: str, tensor: Any, elem: int) -> None:
        self.values[name] = self._store(tensor.to(self.device), elem)
        self.types[name] = elem

    def describe(self) -> dict:

        half = "native half kernels" if self.native_half else "emulated: fp16 storage, fp32 accumulation"
        out = {"runtime": "torch-graph", "version": torch.__version__, "device": str(self.device), "fp16": half}
        if self.device.type == "cuda":
            out["tf32"] = "off (fp32 computed in fp32)"
        return out

    # -- running ---------------------------------------------------------------------------
    def decode(self, latent: np.ndarray, **kwargs: Any) -> np.ndarray:
        out = self.run(latent, **kwargs)
        return out.float().cpu().numpy()

    def feed(self, latent: Any) -> dict[str, Any]:
        """The starting state of a decode: the graph input in its ONNX type."""

        x = latent if isinstance(latent, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(latent))
        return {self.input_name: self._store(x.to(self.device), self.input_type)}

    def run(self, latent: Any, **kwargs: Any) -> Any:

        with torch.inference_mode():
            state = self.run_from(self.feed(latent), 0, **kwargs)
        return state[self.output_name]

    def run_until(self, latent: Any, node_name: str, **kwargs: Any) -> tuple[int, dict]:
        """(index, state) just before node `node_name`: the live tensors the rest needs."""
        stop = self.by_name[node_name].index
        return stop, self.run_from(self.feed(latent), 0, stop=stop, **kwargs)

    def run_from(self, state: dict, start: int, stop: int | None = None, *,
                 input_hooks: dict[tuple[str, int], Callable[[Any], Any]] | None = None,
                 weights: dict[str, Any] | None = None,
                 observe: Callable[[str, Any], None] | None = None) -> dict:
        """Run nodes [start, stop) on a copy of `state`; returns the live tensors after them
        (after the last node: the graph output)."""

        stop = len(self.nodes) if stop is None else stop
        env = dict(state)
        hooks, weights = input_hooks or {}, weights or {}
        if observe is not None and start == 0 and self.input_name in env:
            observe(self.input_name, env[self.input_name])
        with torch.inference_mode(), exact_fp32():
            for node in self.nodes[start:stop]:
                if node.index in self.folded:
                    continue
                args = [self._get(env, name) if name else None for name in node.inputs]
                for index in range(len(args)):
                    if (node.name, index) in hooks:
                        args[index] = hooks[(node.name, index)](args[index])
                if node.name in weights:
                    args[1] = weights[node.name]
                result, elem = self._apply(node, args)
                env[node.outputs[0]] = self._store(result, elem)
                self.types.setdefault(node.outputs[0], elem)
                if observe is not None:
                    observe(node.outputs[0], env[node.outputs[0]])
                for name in node.inputs:
                    if name in env and self.last_use.get(name, -1) <= node.index:
                        del env[name]
        return env

    def _get(self, env: dict, name: str) -> Any:
        if name in env:
            return env[name]
        if name in self.values:
            return self.values[name]
        raise KeyError(f"tensor {name} is not available at this point of the graph")

    def _type(self, name: str) -> int:
        return self.types.get(name, FLOAT)

    def _apply(self, node: Node, args: list) -> tuple[Any, int]:

        op, a = node.op, node.attrs
        if op in ELEMENTWISE:
            return ELEMENTWISE[op](args[0], args[1]), self._type(node.inputs[0])
        if op in UNARY:
            fn = UNARY[op]
            return (args[0] if fn is None else getattr(torch, fn)(args[0])), self._type(node.inputs[0])
        if op == "Cast":
            return args[0], a["to"]
        if op == "Constant":

            value = a["value"]
            return torch.from_numpy(np.array(onnx.numpy_helper.to_array(value))).to(self.device), value.data_type
        if op == "QuantizeLinear":
            zp_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
            elem = self._type(zp_name) if zp_name else UINT8
            zero = args[2] if zp_name else torch.zeros((), device=self.device)
            scale, zero = _along(args[1], args[0], a.get("axis", 1)), _along(zero, args[0], a.get("axis", 1))
            if elem == FLOAT8E4M3FN:
                if bool((zero != 0).any()):
                    raise UserError(f"{node.name}: a float8 QuantizeLinear with a nonzero zero point; this project "
                                    "writes 0 (quant.qdq)")
                return quantize_fp8(args[0], scale), elem
            lo, hi = (-128, 127) if elem == INT8 else (0, 255)
            return quantize(args[0], scale, zero, lo, hi), elem
        if op == "DequantizeLinear":
            zero = args[2] if len(args) > 2 and args[2] is not None else torch.zeros((), device=self.device)
            axis = a.get("axis", 1)
            scale, zero = _along(args[1], args[0], axis), _along(zero, args[0], axis)
            return dequantize(args[0], scale, zero), self._type(node.inputs[1])
        if op in ("Conv", "ConvTranspose"):
            return self._conv(node, args), self._type(node.inputs[0])
        raise AssertionError(op)  # __init__ refused other ops

    def _conv(self, node: Node, args: list) -> Any:
        F = torch.nn.functional  # noqa: N806
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        if not self.native_half:  # emulated fp16 / fp32: compute in fp32
            x, w, b = x.float(), w.float(), (b.float() if b is not None else None)
        a = node.attrs
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
            raise UserError(f"{node.name}: auto_pad {a['auto_pad']} is not supported; export with explicit pads")
        dims = w.dim() - 2
        strides = a.get("strides", [1] * dims)
        dilations = a.get("dilations", [1] * dims)
        pads = a.get("pads", [0] * 2 * dims)
        group = a.get("group", 1)
        begin, end = pads[:dims], pads[dims:]
        if node.op == "Conv":
            conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
            if begin != end:
                flat = [p for pair in zip(reversed(begin), reversed(end)) for p in pair]
                x, begin = F.pad(x, flat), [0] * dims
            return conv(x, w, b, strides, begin, dilations, group)
        conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
        output_padding = a.get("output_padding", [0] * dims)
        if begin == end:
            return conv_t(x, w, b, strides, begin, output_padding, group, dilations)
        y = conv_t(x, w, b, strides, [0] * dims, output_padding, group, dilations)
        index = [slice(None), slice(None)] + [slice(s, y.shape[2 + i] - e) for i, (s, e) in enumerate(zip(begin, end))]
        return y[tuple(index)]


def _along(param: Any, x: Any, axis: int) -> Any:
    """A per-axis Q/DQ parameter shaped to broadcast against x along `axis`."""
    if param.dim() == 0 or param.numel() == 1:
        return param.reshape(())
    shape = [1] * x.dim()
    shape[axis if axis >= 0 else x.dim() + axis] = -1
    return param.reshape(shape)


def _attribute(attr: Any) -> Any:

    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value
