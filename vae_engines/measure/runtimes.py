"""One interface over the ways a decode can run: `decode(latent) -> audio` for quality and
`time_ms(latent)` for speed, and `describe()` saying what ran -- the runtime, the device,
and the precision that actually executed, which is not always the graph's:

- GraphRuntime: an ONNX graph in PyTorch (graph.execute), in the graph's own types: the
  quality runtime wherever no TensorRT engine can run. fp16 is real (CUDA half kernels)
  or emulated per op on the CPU (fp16 storage, fp32 accumulation).
- OrtRuntime: ONNX Runtime's CPU provider. It executes Q/DQ rounding exactly, but computes
  the convolutions of a Q/DQ graph in float, and runs fp16 graphs by casting fp16 weights
  back to fp32 and computing in fp32: its speed is not int8 speed, and an fp16 graph on it
  is "fp16 weights, fp32 compute", not fp16.
- TorchRuntime: the PyTorch decoder module itself (eager fp32 / fp16 / bf16, or
  torch.compile), what a user would run instead of an engine.
- TensorRTRuntime: a built plan through the thin runner, where a GPU accepts it.
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core.errors import UserError

FP16, FP32, BF16 = "fp16", "fp32", "bf16"


def graph_precision(onnx_path: str | Path) -> str:
    """fp32, fp16, int8+fp16 or int8+fp32: what the graph asks for (from its initializers)."""
    from vae_engines.graph.io import load_onnx

    model = load_onnx(onnx_path, load_weights=False)
    types = {i.data_type for i in model.graph.initializer}
    int8 = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    base = FP16 if 10 in types else FP32
    return f"int8+{base}" if int8 else base


class GraphRuntime:
    """An ONNX graph run by the PyTorch graph executor on `device`."""

    name = "torch-graph"

    def __init__(self, onnx_path: str | Path, device: Any) -> None:
        from vae_engines.graph.execute import GraphExecutor
        from vae_engines.graph.io import load_onnx

        self.path = Path(onnx_path)
        self.graph_precision = graph_precision(self.path)
        self.executor = GraphExecutor(load_onnx(self.path), device)

    def describe(self) -> dict:
        from vae_engines.core.device import describe

        info = self.executor.describe()
        fp16 = "fp16" in self.graph_precision
        executed = self.graph_precision + ("" if not fp16 else f" ({info['fp16']})")
        return {**info, **describe(self.executor.device), "model": str(self.path), "graph": self.graph_precision,
                "executed": executed}

    def decode(self, latent: np.ndarray) -> np.ndarray:
        return self.executor.decode(latent)

    def time_ms(self, latent: np.ndarray) -> float:
        from vae_engines.core.device import synchronize

        state = self.executor.feed(latent)
        synchronize(self.executor.device)
        start = time.perf_counter()
        self.executor.run_from(state, 0)
        synchronize(self.executor.device)
        return (time.perf_counter() - start) * 1e3


class OrtRuntime:
    """ONNX Runtime on the CPU (see the module docstring for what it executes)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int = 2) -> None:
        from vae_engines.graph.io import ort_session

        self.path = Path(onnx_path)
        self.session = ort_session(self.path, threads)
        self.input = self.session.get_inputs()[0]
        self.dtype = np.float16 if "float16" in self.input.type else np.float32
        self.threads = threads
        self.graph_precision = graph_precision(self.path)

    def describe(self) -> dict:
        executed = {FP32: "fp32", FP16: "fp16 weights, fp32 compute (ORT's CPU provider upcasts)",
                    "int8+fp32": "int8 Q/DQ rounding, float32 convolutions (ORT's CPU provider dequantizes)",
                    "int8+fp16": "int8 Q/DQ rounding, float32 convolutions, fp16 parts computed in fp32"}
        return {"runtime": "onnxruntime", "version": importlib.metadata.version("onnxruntime"),
                "provider": "CPUExecutionProvider", "device": "cpu", "threads": self.threads, "model": str(self.path),
                "graph": self.graph_precision, "executed": executed[self.graph_precision]}

    def decode(self, latent: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input.name: latent.astype(self.dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)

    def time_ms(self, latent: np.ndarray) -> float:
        x = latent.astype(self.dtype, copy=False)
        start = time.perf_counter()
        self.session.run(None, {self.input.name: x})
        return (time.perf_counter() - start) * 1e3


class TorchRuntime:
    """The folded PyTorch decoder in `precision` on `device`, eager or torch.compile'd."""

    name = "torch"

    def __init__(self, decoder: Any, device: Any, precision: str = FP32, compile: bool = False) -> None:
        import copy

        import torch

        dtypes = {FP32: torch.float32, FP16: torch.float16, BF16: torch.bfloat16}
        self.dtype = dtypes[precision]
        self.precision = precision
        self.device = device
        module = copy.deepcopy(decoder).to(device=device, dtype=self.dtype).eval()
        self.module = torch.compile(module, mode="max-autotune-no-cudagraphs") if compile else module
        self.compiled = compile
        self.label = f"torch {precision}" + (" compile" if compile else " eager")

    def describe(self) -> dict:
        import torch

        from vae_engines.core.device import describe

        executed = self.precision
        if self.precision == FP32 and self.device.type == "cuda" and torch.backends.cudnn.allow_tf32:
            executed = "fp32 with TF32 convolutions (PyTorch's default on CUDA)"
        return {"runtime": "torch", **describe(self.device), "executed": executed,
                "mode": "torch.compile (max-autotune-no-cudagraphs)" if self.compiled else "eager"}

    def decode(self, latent: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(latent)).to(self.device, self.dtype)
            return self.module(x).float().cpu().numpy()

    def time_ms(self, latent: np.ndarray) -> float:
        import torch

        from vae_engines.core.device import synchronize

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(latent)).to(self.device, self.dtype)
            synchronize(self.device)
            start = time.perf_counter()
            self.module(x)
            synchronize(self.device)
        return (time.perf_counter() - start) * 1e3


class TensorRTRuntime:
    """A built plan through the thin runner, where a GPU that accepts it exists."""

    name = "tensorrt"

    def __init__(self, backend_name: str, plan_path: str | Path) -> None:
        from vae_engines.trt.backend import resolve
        from vae_engines.trt.runner import EngineRunner

        self.backend = resolve(backend_name)
        self.runner = EngineRunner(self.backend, plan_path)
        self.plan = Path(plan_path)

    def describe(self) -> dict:
        return {"runtime": self.backend.name, "version": self.backend.version, "plan": str(self.plan),
                "device_memory_bytes": self.runner.device_memory_bytes(), "executed": "the engine's own layers"}

    def decode(self, latent: np.ndarray) -> np.ndarray:
        return self.runner.decode(latent)

    def time_ms(self, latent: np.ndarray) -> float:
        return self.runner.time_ms(latent, warmup=0, repeats=1)[0]

    def close(self) -> None:
        self.runner.close()


def tensorrt_status(backend_name: str, plan_path: str | Path) -> str | None:
    """None where the plan can run here, else 'not measured: <why>'. A truncated or replaced
    plan is an error even where it cannot run."""
    from vae_engines.trt.runner import unavailable_reason, verify_plan

    verify_plan(plan_path)
    reason = unavailable_reason(backend_name)
    return None if reason is None else f"not measured: {reason}"


def check_finite(audio: np.ndarray, variant: str, runtime: str) -> np.ndarray:
    """NaN or Inf in an output is a failure that names the variant, never a silent nan metric."""
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise UserError(f"variant {variant} produced {bad} NaN/Inf samples on {runtime}; its ranges or fp16 "
                        "overflow break it: keep more layers in float or use another calibrator")
    return audio
