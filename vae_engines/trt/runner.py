"""The thin runner: deserialize a plan, set the input shape per call, run on a stream.

numpy in, numpy out, device memory through cuda-python (`cuda.bindings`); no torch. It
needs an NVIDIA GPU that the plan's backend accepts (TensorRT: the GPU it was built for;
TensorRT-RTX: compute capability 8.x or 12.x). Where there is none, `unavailable_reason`
says why and callers report "not measured: <reason>".

Everything that can be checked without a GPU is checked first, as plain functions: the
plan's bytes against the metadata written at build time (a truncated or corrupted plan
is a clear error, not a crash inside deserialization), the call's shape against the
profile, and the dtype mapping.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import read_json, sha256_file

log = logging.getLogger(__name__)

NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BF16": None}


def numpy_dtype(trt_dtype_name: str) -> Any:
    """numpy dtype for a TensorRT DataType name (`FLOAT`, `HALF`, ...)."""
    name = trt_dtype_name.split(".")[-1]
    if NUMPY_DTYPES.get(name) is None:
        raise UserError(f"engine I/O type {name} has no numpy equivalent; export with float32 or float16 I/O")
    return NUMPY_DTYPES[name]


def check_shape(shape: tuple[int, ...], lo: list[int], hi: list[int]) -> None:
    """A call's input shape must lie inside the engine's profile, dimension by dimension."""
    if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
        raise UserError(f"input shape {list(shape)} is outside the engine's profile {lo} .. {hi}; rebuild with a "
                        "wider profile or split the call")


def verify_plan(plan_path: str | Path) -> dict:
    """The plan's build metadata, after checking the plan is whole and unchanged."""
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise UserError(f"{plan_path} does not exist; build it with `dvc repro`")
    meta = read_json(plan_path.with_suffix(".json"))
    size = plan_path.stat().st_size
    if size != meta.get("plan_bytes"):
        raise UserError(f"{plan_path} is {size} bytes but was built as {meta.get('plan_bytes')}: it is truncated or "
                        "replaced; rebuild it with `dvc repro`")
    if sha256_file(plan_path) != meta.get("plan_sha256"):
        raise UserError(f"{plan_path} does not match its build metadata (sha256): it is corrupted; rebuild it with "
                        "`dvc repro`")
    return meta


def unavailable_reason(backend_name: str) -> str | None:
    """Why no engine of `backend_name` can run here, or None if one may."""
    from vae_engines.trt.backend import resolve

    try:
        resolve(backend_name)
    except UserError:
        return f"{backend_name} is not installed"
    # The hardware first: on a machine without a usable GPU, installing cuda-python would not help.
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU on this machine"
    try:
        caps = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "nvidia-smi failed: no usable NVIDIA GPU"
    if not caps:
        return "no NVIDIA GPU on this machine"
    if backend_name == "tensorrt_rtx" and not any(c.startswith(("8.", "12.")) for c in caps):
        return f"TensorRT-RTX runs only on compute capability 8.x / 12.x GPUs; this one is {caps[0]}"
    try:
        from cuda.bindings import runtime as cudart  # noqa: F401
    except ImportError:
        return "cuda-python is not installed (pip install 'vae-engines[runner]')"
    return None


class EngineRunner:
    """Run one plan: decode(latent [B, C, T] float32) -> audio [B, 2, T * hop].

    Benchmark-grade: the execution context and device buffers are made once and reused
    (buffers grow only when a larger shape arrives), `time_ms` times the engine alone with
    CUDA events after warm-up (inputs already on the device), and `close()` releases the
    buffers, events, stream, context and engine.
    """

    def __init__(self, backend: Any, plan_path: str | Path) -> None:
        from vae_engines.trt.cuda import CudaStream

        self.meta = verify_plan(plan_path)
        self.trt = backend.trt
        self.logger = backend.logger()
        self.runtime = self.trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise UserError(f"{backend.name} could not load {plan_path} ({'; '.join(self.logger.errors[-2:])}); "
                            "rebuild it for this GPU and version")
        self.context = self.engine.create_execution_context()
        self.cuda = CudaStream()
        self.input = self.meta["inputs"][0]
        self.output = self.meta["outputs"][0]

    def device_memory_bytes(self) -> int:
        return int(getattr(self.engine, "device_memory_size_v2", self.engine.device_memory_size))

    def _prepare(self, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_shape(latent.shape, self.meta["profile"]["min"], self.meta["profile"]["max"])
        latent = np.ascontiguousarray(latent, dtype=numpy_dtype(self.input["dtype"]))
        self.context.set_input_shape(self.input["name"], latent.shape)
        out = np.empty(tuple(self.context.get_tensor_shape(self.output["name"])),
                       dtype=numpy_dtype(self.output["dtype"]))
        self.context.set_tensor_address(self.input["name"], self.cuda.upload("input", latent))
        self.context.set_tensor_address(self.output["name"], self.cuda.buffer("output", out.nbytes))
        return latent, out

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.cuda.stream):
            raise RuntimeError("execute_async_v3 failed")

    def decode(self, latent: np.ndarray) -> np.ndarray:
        _, out = self._prepare(latent)
        self._execute()
        return self.cuda.download("output", out).astype(np.float32, copy=False)

    def time_ms(self, latent: np.ndarray, warmup: int, repeats: int) -> list[float]:
        """GPU milliseconds of `repeats` executions of the engine on `latent` (on the device)."""
        self._prepare(latent)
        for _ in range(warmup):
            self._execute()
        self.cuda.synchronize()
        return [self.cuda.time_ms(self._execute) for _ in range(repeats)]

    def close(self) -> None:
        self.cuda.close()
        self.context = self.engine = self.runtime = None

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
