"""The PyTorch decoder itself, eager: what a diffusers / ACE-Step app runs today, and the
fp32 reference every engine is measured against.

`precision` fp32 runs in fp32 (TF32 off: core.device.exact_fp32), fp16 and bf16 cast the
weights and compute in that type, as `vae.to(dtype)` does in an app.
"""

from __future__ import annotations

import copy
from typing import Any

from vae_engines.core import device as devices
from vae_engines.core.choices import Precision
from vae_engines.core.lazy import lazy_import
from vae_engines.runtime.base import Decoder, Shape

torch = lazy_import("torch")


def torch_dtype(precision: Precision | str) -> Any:
    return {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}[
        Precision(precision)]


class EagerDecoder(Decoder):
    """A folded decoder module (model.oobleck.fold_decoder) in `precision` on `device`."""

    kind = "torch eager"

    def __init__(self, decoder: Any, shape: Shape, precision: Precision | str, device: Any) -> None:
        self.precision = Precision(precision)
        self.dtype = torch_dtype(self.precision)
        self.device = torch.device(device)
        self.shape = shape
        self.module = copy.deepcopy(decoder).to(device=self.device, dtype=self.dtype).eval()

    def _run(self, x: Any) -> Any:
        with torch.inference_mode(), devices.exact_fp32():
            return self.module(x.to(self.dtype)).float()

    def describe(self) -> dict:
        return {**super().describe(), "runtime": "torch", **devices.describe(self.device), "mode": "eager",
                "executed": "fp32 (TF32 off)" if self.precision == Precision.FP32 else str(self.precision)}
