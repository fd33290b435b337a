"""One `decode(latent) -> audio` interface over ONNX Runtime, PyTorch and TensorRT.

Each runtime describes itself (for provenance beside every number it produces); the
TensorRT one says why it cannot run where it cannot.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core.errors import UserError


class OrtRuntime:
    """ONNX Runtime on the CPU. It executes Q/DQ models as written (int8 rounding of
    activations and weights, real), fp16 models with its CPU fp16 kernels."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int = 2) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise UserError(f"{self.path} does not exist; run `dvc repro` to make it")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"onnxruntime cannot load {self.path} ({str(exc).splitlines()[0][:120]}); delete it "
                            "and run `dvc repro`") from None
        self.input = self.session.get_inputs()[0]
        self.dtype = np.float16 if "float16" in self.input.type else np.float32
        self.threads = threads

    def describe(self) -> dict:
        return {"runtime": "onnxruntime", "version": importlib.metadata.version("onnxruntime"),
                "provider": "CPUExecutionProvider", "threads": self.threads, "model": str(self.path)}

    def decode(self, latent: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input.name: latent.astype(self.dtype, copy=False)})[0]
        return out.astype(np.float32, copy=False)


class TorchRuntime:
    """The folded PyTorch decoder (the export's source) on the CPU, fp32."""

    name = "torch"

    def __init__(self, decoder: Any, threads: int = 2) -> None:
        import torch

        torch.set_num_threads(threads)
        self.decoder = decoder.eval()
        self.threads = threads

    def describe(self) -> dict:
        import torch

        return {"runtime": "torch", "version": torch.__version__, "device": "cpu", "dtype": "float32",
                "threads": self.threads}

    def decode(self, latent: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.decoder(torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))).numpy()


class TensorRTRuntime:
    """A built plan through the thin runner, where a GPU that accepts it exists."""

    name = "tensorrt"

    def __init__(self, backend_name: str, plan_path: str | Path) -> None:
        from vae_engines.trt.backend import resolve
        from vae_engines.trt.runner import EngineRunner

        self.backend = resolve(backend_name)
        self.runner = EngineRunner(self.backend, plan_path)
        self.plan = Path(plan_path)

    @staticmethod
    def unavailable_reason(backend_name: str) -> str | None:
        from vae_engines.trt.runner import unavailable_reason

        return unavailable_reason(backend_name)

    def describe(self) -> dict:
        return {"runtime": self.backend.name, "version": self.backend.version, "plan": str(self.plan),
                "device_memory_bytes": self.runner.device_memory_bytes()}

    def decode(self, latent: np.ndarray) -> np.ndarray:
        return self.runner.decode(latent)


def check_finite(audio: np.ndarray, variant: str, runtime: str) -> np.ndarray:
    """NaN or Inf in an output is a failure that names the variant, never a silent nan metric."""
    if not np.isfinite(audio).all():
        bad = int((~np.isfinite(audio)).sum())
        raise UserError(f"variant {variant} produced {bad} NaN/Inf samples on {runtime}; its ranges or fp16 "
                        "overflow break it: keep more layers in float or use another calibrator")
    return audio


def variant_runtime(backend_name: str, plan_path: str | Path, onnx_path: str | Path,
                    threads: int = 2) -> tuple[Any, str]:
    """The runtime a variant's numbers come from: its TensorRT engine where one can run,
    else ONNX Runtime on the CPU for the same ONNX. Returns (runtime, tensorrt status)."""
    from vae_engines.trt.runner import verify_plan

    verify_plan(plan_path)  # a truncated or replaced plan is an error even where it cannot run
    reason = TensorRTRuntime.unavailable_reason(backend_name)
    if reason is None:
        return TensorRTRuntime(backend_name, plan_path), "measured"
    return OrtRuntime(onnx_path, threads), f"not measured: {reason}"
