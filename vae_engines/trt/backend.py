"""The one place that knows TensorRT from TensorRT-RTX.

Both expose the same builder API under different module names; they differ in how an
engine is targeted (TensorRT: the GPU it is built on, plus a timing cache; TensorRT-RTX:
a list of compute capabilities, or portable, and no timing cache) and in which GPUs can
run the result. Everything else in the project asks `resolve()` for a backend and uses it
without knowing which one it has.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from vae_engines.core.errors import UserError

log = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'vae-engines[tensorrt-rtx]' (TensorRT-RTX builds engines with no GPU), or NVIDIA's tensorrt"


MODULES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt_rtx"}


def installed(name: str) -> bool:
    """Whether backend `name`'s module is installed (found, not imported: importing takes seconds)."""
    try:
        return importlib.util.find_spec(MODULES[name]) is not None
    except (ImportError, ValueError):
        return False


def _import(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except Exception:  # a stub wheel without its libraries fails with OSError / ImportError
        return None


@dataclass(frozen=True)
class TensorRT:
    """Full TensorRT (10.x / 11.x): engines for the GPU they are built on."""

    trt: Any
    name: str = "tensorrt"
    uses_timing_cache: bool = True

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def target(self, compute_capabilities: tuple[str, ...]) -> str:
        if compute_capabilities:
            log.warning("build.compute_capabilities is a TensorRT-RTX setting; TensorRT targets the build GPU")
        return "the build GPU"

    def apply_target(self, config: Any, compute_capabilities: tuple[str, ...]) -> None:
        del config, compute_capabilities  # TensorRT always targets the GPU it builds on

    def logger(self) -> Any:
        return _make_logger(self.trt)


@dataclass(frozen=True)
class TensorRTRTX(TensorRT):
    """TensorRT-RTX: builds with no GPU for a list of compute capabilities (RTX-class GPUs:
    8.x and 12.x); its timing cache calls are no-ops since 1.2, so none is used."""

    name: str = "tensorrt_rtx"
    uses_timing_cache: bool = False

    def target(self, compute_capabilities: tuple[str, ...]) -> str:
        return ", ".join(f"sm{cc.replace('.', '')}" for cc in compute_capabilities) or "portable (all supported GPUs)"

    def apply_target(self, config: Any, compute_capabilities: tuple[str, ...]) -> None:
        if not compute_capabilities:
            return  # the library default: every compute capability it supports
        known = {m: getattr(self.trt.ComputeCapability, m) for m in dir(self.trt.ComputeCapability)
                 if m.startswith("SM")}
        config.num_compute_capabilities = len(compute_capabilities)
        for index, cc in enumerate(compute_capabilities):
            key = "SM" + cc.replace(".", "")
            if key not in known:
                raise UserError(f"build.compute_capabilities: {cc} is not a TensorRT-RTX target; use one of "
                                f"{', '.join(k[2:-1] + '.' + k[-1] for k in sorted(known))}")
            config.set_compute_capability(known[key], index)


def _make_logger(trt: Any) -> Any:
    class CapturingLogger(trt.ILogger):
        """Forwards to logging and keeps errors, so a failed build can say why in one line."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            # Errors are kept for the failure message rather than printed: a GPU-less
            # TensorRT-RTX build logs CUDA-driver errors that do not stop the build.
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(msg)
            if severity <= trt.ILogger.WARNING:
                log.debug("%s", msg)

    return CapturingLogger()


def resolve(choice: str) -> TensorRT:
    """The backend for build.backend `choice`: auto | tensorrt | tensorrt_rtx."""
    if choice in ("auto", "tensorrt"):
        trt = _import("tensorrt")
        if trt is not None:
            return TensorRT(trt)
        if choice == "tensorrt":
            if _import("tensorrt_rtx") is not None:
                raise UserError("build.backend is 'tensorrt' but only TensorRT-RTX is installed; set "
                                "build.backend: tensorrt_rtx (or auto), or install NVIDIA's tensorrt")
            raise UserError(f"build.backend is 'tensorrt' but TensorRT is not installed; {EXTRA_HINT}")
    rtx = _import("tensorrt_rtx")
    if rtx is None:
        raise UserError(f"TensorRT-RTX is not installed (build.backend: {choice}); {EXTRA_HINT}")
    return TensorRTRTX(rtx)
