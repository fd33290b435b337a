"""ONNX graphs two ways: ONNX Runtime's CPU provider (what a CPU deployment runs), and the
project's PyTorch graph executor (the quality executor, in the graph's own types).

ONNX Runtime executes Q/DQ rounding exactly but computes the convolutions of a Q/DQ graph
in float, and runs an fp16 graph by casting its weights back to fp32: its speed is not int8
speed, and its fp16 is "fp16 weights, fp32 compute". `describe()` says so. The graph
executor runs fp16 in fp16 (native half kernels on a GPU, per-op fp16 rounding on a CPU:
graph.execute) -- the runtime that measures quality wherever no engine can run.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from vae_engines.core import device as devices
from vae_engines.core.lazy import lazy_import
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import file_metadata, graph_precision, latent_range, load_onnx, ort_session, variant_recipe
from vae_engines.runtime.base import Decoder, Shape
from vae_engines.runtime.guard import OnRange, RangeGuard

torch = lazy_import("torch")

ORT_EXECUTES = {
    "fp32": "fp32",
    "fp16": "fp16 weights, fp32 compute (ONNX Runtime's CPU provider upcasts)",
    "int8+fp32": "int8 Q/DQ rounding, float32 convolutions (ONNX Runtime's CPU provider dequantizes)",
    "int8+fp16": "int8 Q/DQ rounding, float32 convolutions, fp16 parts computed in fp32",
    "fp8+fp32": "float8 e4m3fn Q/DQ rounding, float32 convolutions (ONNX Runtime's CPU provider dequantizes)",
    "fp8+fp16": "float8 e4m3fn Q/DQ rounding, float32 convolutions, fp16 parts computed in fp32",
}


def graph_guard(path: Path, precision: str, range_guard: float | None, on_range: OnRange | str | None) -> RangeGuard:
    """An INT8 graph's guard over the latent range its recipe was calibrated on (a float graph: none)."""
    input_range = latent_range(variant_recipe(path)) if precision.startswith(("int8", "fp8")) else None
    return RangeGuard.of(f"onnx engine {path.name}", input_range, range_guard, on_range)


def onnx_shape(path: str | Path, channels: int) -> Shape:
    meta = file_metadata(path)
    return Shape(channels=channels, hop=int(meta.get("hop", 1920)), sampling_rate=int(meta.get("sampling_rate", 48000)))


class OnnxDecoder(Decoder):
    """An ONNX graph on ONNX Runtime's CPU provider; an INT8 variant's graph guards the
    latent range it was calibrated on (range_guard, on_range: runtime.guard)."""

    kind = "onnx"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, *, range_guard: float | None = None,
                 on_range: OnRange | str | None = None) -> None:
        self.path = Path(onnx_path)
        self.session = ort_session(self.path, threads)
        self.input = self.session.get_inputs()[0]
        self.numpy_type = "float16" if "float16" in self.input.type else "float32"
        self.threads = threads
        self.precision = graph_precision(self.path)
        self.guard = graph_guard(self.path, self.precision, range_guard, on_range)
        self.device = torch.device("cpu")
        self.shape = onnx_shape(self.path, int(self.input.shape[1]))

    def _run(self, x: Any) -> Any:
        out = self.session.run(None, {self.input.name: x.numpy().astype(self.numpy_type, copy=False)})[0]
        return torch.from_numpy(out).float()

    def describe(self) -> dict:
        return {**super().describe(), "runtime": "onnxruntime", "version": importlib.metadata.version("onnxruntime"),
                "provider": "CPUExecutionProvider", "threads": self.threads, "model": str(self.path),
                "executed": ORT_EXECUTES[self.precision]}


class GraphDecoder(Decoder):
    """An ONNX graph run node by node in PyTorch, in the graph's own types, on `device`: the
    pipeline's quality executor, which measures whatever latents it is given (no range guard)."""

    kind = "onnx"

    def __init__(self, onnx_path: str | Path, device: Any) -> None:
        self.path = Path(onnx_path)
        model = load_onnx(self.path)
        self.executor = GraphExecutor(model, device)
        self.device = self.executor.device
        self.precision = graph_precision(self.path)
        self.shape = onnx_shape(self.path, int(model.graph.input[0].type.tensor_type.shape.dim[1].dim_value))

    def _run(self, x: Any) -> Any:
        return self.executor.run(x).float()

    def describe(self) -> dict:
        info = self.executor.describe()
        executed = self.precision + (f" ({info['fp16']})" if "fp16" in self.precision else "")
        return {**super().describe(), **info, **devices.describe(self.device), "model": str(self.path),
                "graph": self.precision, "executed": executed}
