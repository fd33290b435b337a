"""Two records of the environment, read without importing heavy modules.

- `toolchain(backend)`: what changes an engine: the TensorRT backend that builds it and its
  version. Builds depend on it (engines/toolchain.json), so upgrading TensorRT rebuilds
  engines, and a teammate on another kernel or CPU rebuilds nothing.
- `fingerprint()`: the machine (CPU, GPU, Python, library versions): provenance written
  beside every measured number, never a dependency.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

DISTRIBUTIONS = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
    "tensorrt_rtx": ("tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx"),
}


def version(*dists: str) -> str | None:
    """The installed version of the first of `dists` that is installed, else None."""
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installed_versions() -> dict[str, str | None]:
    """Versions of the TensorRT packages, from package metadata (no import, no GPU)."""
    return {key: version(*dists) for key, dists in DISTRIBUTIONS.items()}


def toolchain(backend: str) -> dict:
    """The build toolchain that build.backend `backend` selects: name and version only.

    `auto` prefers TensorRT when its package is installed, as trt.backend.resolve does.
    """
    versions = installed_versions()
    name = backend
    if backend == "auto":
        name = "tensorrt" if versions["tensorrt"] else "tensorrt_rtx"
    return {"backend": name, "version": versions.get(name)}


def torch_target(device_choice: str) -> dict:
    """What compiled PyTorch engines are built for: the torch version (its local tag names the
    CUDA build) and the first GPU nvidia-smi lists, or the CPU -- read without importing
    torch. compute.device `cpu` means the CPU whatever the machine has."""
    torch_version = version("torch")
    cuda_build = torch_version is not None and "+cpu" not in torch_version
    found = gpus() if device_choice != "cpu" and cuda_build else []
    return {"torch": torch_version, "device": found[0] if found else "cpu"}


@lru_cache(maxsize=1)
def nvidia_gpus() -> tuple[tuple[str, str], ...]:
    """(name, compute capability) of each NVIDIA GPU here, from one nvidia-smi call per process
    (it takes up to a second on some machines); () where there is none."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple((n.strip(), c.strip()) for n, c in (line.split(",", 1) for line in out.splitlines() if "," in line))


def gpus() -> list[str]:
    """NVIDIA GPUs as 'name (compute capability)', or [] where there is none."""
    return [f"{name} ({cc})" for name, cc in nvidia_gpus()]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict:
    """The machine and library versions: provenance beside a measured number."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": gpus() or "none",
        "versions": {
            **installed_versions(),
            "onnx": version("onnx"),
            "onnxruntime": version("onnxruntime", "onnxruntime-gpu"),
            "torch": version("torch"),
            "diffusers": version("diffusers"),
            "numpy": version("numpy"),
            "triton": version("triton"),
            "vae-engines": version("vae-engines"),
        },
    }


def source_digest(names: tuple[str, ...]) -> str:
    """sha256 of the package's own source under `names` (folders of vae_engines, or .py files
    in it): each file's path, relative to the package, then its bytes, in path order. What a
    record keyed by it was computed with (the tune stage's timings, the INT8 benches')."""
    package = Path(__file__).resolve().parents[1]
    files = sorted(f for name in names for f in ([package / name] if name.endswith(".py")
                                                 else (package / name).glob("*.py")))
    return hashlib.sha256(b"".join(f.relative_to(package).as_posix().encode() + f.read_bytes()
                                   for f in files)).hexdigest()
