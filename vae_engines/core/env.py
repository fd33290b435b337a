"""The environment fingerprint: versions and device, read without importing heavy modules.

Builds depend on it (through reports/env.json), so upgrading TensorRT rebuilds engines
and nothing else; it carries no timestamps, so an unchanged machine changes nothing.
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess

from vae_engines.trt.backend import installed_versions


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpus() -> list[str]:
    """NVIDIA GPUs as 'name (compute capability)', or [] where there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [f"{n.strip()} ({c.strip()})" for n, c in (line.split(",", 1) for line in out.splitlines() if "," in line)]


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
    import os

    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": gpus() or "none",
        "versions": {
            **installed_versions(),
            "onnx": _version("onnx"),
            "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
            "torch": _version("torch"),
            "diffusers": _version("diffusers"),
            "numpy": _version("numpy"),
            "cuda-python": _version("cuda-python"),
            "vae-engines": _version("vae-engines"),
        },
    }
