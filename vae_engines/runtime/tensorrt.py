"""TensorRT and TensorRT-RTX plans, run on the caller's torch tensors and CUDA stream.

The engine reads the input tensor where it lies and writes into an output tensor allocated
by PyTorch's caching allocator on the same device: tensor addresses go straight to the
execution context, the work is queued on `torch.cuda.current_stream()`, and nothing passes
through the host. The plan is checked against its build record first (trt.plan), and the
backend named in that record is the one that loads it (trt.backend knows which is which).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import
from vae_engines.runtime.base import Decoder, Shape
from vae_engines.runtime.guard import OnRange, RangeGuard
from vae_engines.trt.backend import resolve
from vae_engines.trt.plan import plan_metadata, unavailable_reason

torch = lazy_import("torch")

TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16"}


def torch_dtype(trt_dtype_name: str) -> Any:
    """The torch dtype of a TensorRT DataType name (`FLOAT`, `HALF`, `BF16`)."""
    name = trt_dtype_name.split(".")[-1]
    if name not in TORCH_DTYPES:
        raise UserError(f"engine I/O type {name} is not a float type; export with float32 or float16 I/O")
    return getattr(torch, TORCH_DTYPES[name])


def plan_shape(meta: dict) -> Shape:
    lo, hi = meta["profile"]["min"], meta["profile"]["max"]
    return Shape(channels=lo[1], hop=meta["hop"], sampling_rate=meta.get("sampling_rate", 48000),
                 frames=(lo[2], hi[2]), batch=(lo[0], hi[0]))


class PlanDecoder(Decoder):
    """A built plan on this machine's GPU (see the module docstring); an INT8 plan guards
    the input range its record holds (range_guard, on_range: runtime.guard)."""

    def __init__(self, plan_path: str | Path, device: Any = None, *, range_guard: float | None = None,
                 on_range: OnRange | str | None = None) -> None:
        self.path = Path(plan_path)
        self.meta = plan_metadata(self.path)
        self.kind = self.meta["backend"]
        self.guard = RangeGuard.of(f"{self.kind} engine {self.path.name}", self.meta.get("input_range"), range_guard,
                                   on_range)
        reason = unavailable_reason(self.kind)
        if reason is not None:
            raise UserError(f"{self.path} cannot run here: {reason}")
        self.backend = resolve(self.kind)
        self.device = torch.device(device or "cuda")
        self.shape = plan_shape(self.meta)
        self.precision = self.meta.get("precision", "the plan's own")
        self.logger = self.backend.logger()
        self.runtime = self.backend.trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise UserError(f"{self.backend.name} could not load {self.path} "
                                f"({'; '.join(self.logger.errors[-2:])}); rebuild it for this GPU and version")
            self.context = self.engine.create_execution_context()
        self.input, self.output = self.meta["inputs"][0], self.meta["outputs"][0]
        self.input_dtype = torch_dtype(self.input["dtype"])
        self.output_dtype = torch_dtype(self.output["dtype"])

    def _run(self, x: Any) -> Any:
        x = x.to(self.input_dtype).contiguous()
        self.context.set_input_shape(self.input["name"], tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output["name"])), dtype=self.output_dtype,
                          device=self.device)
        self.context.set_tensor_address(self.input["name"], x.data_ptr())
        self.context.set_tensor_address(self.output["name"], out.data_ptr())
        if not self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError(f"{self.backend.name} failed to enqueue {self.path.name}")
        return out.float()

    def device_memory_bytes(self) -> int:
        """Activation memory the execution context holds, as the engine reports it."""
        return int(getattr(self.engine, "device_memory_size_v2", None) or self.engine.device_memory_size)

    def describe(self) -> dict:
        return {**super().describe(), "runtime": self.backend.name, "version": self.backend.version,
                "plan": str(self.path), "executed": self.meta.get("int8_execution", "the engine's own layers"),
                "device_memory_bytes": self.device_memory_bytes()}

    def close(self) -> None:
        self.context = self.engine = self.runtime = None
