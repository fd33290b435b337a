"""The compute device of the heavy stages: PyTorch on the CPU or on a CUDA GPU.

`auto` picks CUDA when PyTorch sees a GPU, else the CPU. What was picked goes into the
provenance of every number computed on it (`describe`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator
from typing import Any

from vae_engines.core.choices import Device
from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import
from vae_engines.core.params import ComputeParams

torch = lazy_import("torch")


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of returning it to the kernel.

    A decode allocates and frees tens-of-MB activations op after op; by default glibc
    maps and unmaps each one, and the page faults cost as much as the arithmetic: on this
    project's 2-core CPU a fixture decode (2 x 32 frames) took 0.48 s (0.35 s of it system
    time) and 0.29 s with these settings. The price is a process that keeps its peak
    resident size until it exits, which a stage does soon after.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: heap, not mmap, below 1 GiB
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never trim the heap top
        libc.mallopt(-2, 1 << 28)  # M_TOP_PAD: grow the heap 256 MiB at a time
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return


def resolve(compute: ComputeParams) -> Any:
    """The torch.device of params `compute` (device auto | cpu | cuda), with PyTorch's CPU
    threads set: the one place a stage turns compute.device into a device."""
    keep_freed_memory()
    torch.set_num_threads(compute.threads)
    if compute.device == Device.CPU:
        return torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    if compute.device == Device.CUDA and not has_cuda:
        build = torch.__version__
        why = ("this torch is a CPU-only build" if torch.version.cuda is None
               else "PyTorch sees no CUDA GPU (driver, CUDA_VISIBLE_DEVICES?)")
        raise UserError(f"compute.device is cuda but {why} (torch {build}); install a CUDA build of torch or set "
                        "compute.device: cpu (or auto)")
    return torch.device("cuda") if has_cuda else torch.device("cpu")


def describe(device: Any) -> dict:
    """Provenance of a device: its kind and name."""
    if device.type == "cuda":
        index = device.index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return {"device": "cuda", "name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}",
                "torch": torch.__version__, "cuda": torch.version.cuda}
    return {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}


def synchronize(device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 means fp32: PyTorch lets cuDNN run fp32 convolutions in TF32 (10-bit mantissa)
    by default, which would make every "vs fp32" figure on a GPU a comparison with TF32."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


GPU_FRAMES_PER_CALL = 2048  # latent frames decoded together on a GPU (memory stays bounded)


def batch_size(frames: int, device: Any) -> int:
    """How many latents of `frames` frames to decode per call on `device`: on a GPU enough to
    keep it busy, up to GPU_FRAMES_PER_CALL frames; on a CPU one, whose decode is no faster
    batched and whose larger tensors cost memory traffic."""
    return max(1, GPU_FRAMES_PER_CALL // max(frames, 1)) if device.type == "cuda" else 1
