"""What can be known about a built plan without running it: whether it is whole (its bytes
against the metadata written at build time) and whether this machine can run it.

A truncated or replaced plan is a clear error even where no GPU could load it. Running
needs an NVIDIA GPU the plan's backend accepts (TensorRT: the GPU it was built on;
TensorRT-RTX: compute capability 8.x or 12.x) and a CUDA build of PyTorch, whose tensors
and streams the runtime hands to the engine. The checks go from the cheapest to the
dearest -- nvidia-smi before importing torch -- so a machine that cannot run a plan learns
it in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from vae_engines.core.env import nvidia_gpus
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import read_json, sha256_file
from vae_engines.core.lazy import lazy_import
from vae_engines.trt.backend import installed

torch = lazy_import("torch")

RTX_COMPUTE = ("8.", "12.")  # TensorRT-RTX 1.7 runs on 8.0 / 8.6 / 8.9 / 12.x (and refuses 9.0)


def plan_metadata(plan_path: str | Path, hashed: bool = True) -> dict:
    """The plan's build record (the .json beside it), after checking the plan is whole: its
    size, and (`hashed`) its sha256 -- which reads the whole plan, so a caller that will not
    load it may check the size alone."""
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        raise UserError(f"{plan_path} does not exist; build it with `dvc repro`")
    meta = read_json(plan_path.with_suffix(".json"))
    size = plan_path.stat().st_size
    if size != meta.get("plan_bytes"):
        raise UserError(f"{plan_path} is {size} bytes but was built as {meta.get('plan_bytes')}: it is truncated or "
                        "replaced; rebuild it with `dvc repro`")
    if hashed and sha256_file(plan_path) != meta.get("plan_sha256"):
        raise UserError(f"{plan_path} does not match its build metadata (sha256): it is corrupted; rebuild it with "
                        "`dvc repro`")
    return meta


def gpu_capabilities() -> list[str]:
    """Compute capabilities of this machine's NVIDIA GPUs ([] where there is none)."""
    return [cc for _, cc in nvidia_gpus()]


def unavailable_reason(backend_name: str) -> str | None:
    """Why no plan of `backend_name` can run here, or None if one may."""
    if not installed(backend_name):
        return f"{backend_name} is not installed"
    caps = gpu_capabilities()
    if not caps:
        return "no NVIDIA GPU on this machine"
    if backend_name == "tensorrt_rtx" and not any(c.startswith(RTX_COMPUTE) for c in caps):
        return f"TensorRT-RTX runs only on compute capability 8.x / 12.x GPUs; this one is {caps[0]}"
    if not torch.cuda.is_available():
        return f"this PyTorch ({torch.__version__}) cannot use the GPU; install a CUDA build of torch"
    return None


def not_measured(plan_path: str | Path) -> str | None:
    """None where the plan can run here, else 'not measured: <why>'. A damaged plan is an
    error even where it could not run."""
    reason = unavailable_reason(plan_metadata(plan_path)["backend"])
    return None if reason is None else f"not measured: {reason}"
