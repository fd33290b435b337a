"""The few CUDA runtime calls the engine runner needs, through cuda-python (no torch).

Device buffers, one stream, and a pair of events to time work on that stream. Every
handle is released by `close()` (or leaving the `with` block). None of this needs a
TensorRT engine, so it is tested on any NVIDIA GPU, including ones TensorRT-RTX refuses.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


def _check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else (rest or None)


class CudaStream:
    """A stream with device buffers and timing events. Buffers are named and reused."""

    def __init__(self) -> None:
        from cuda.bindings import runtime as cudart

        self.cudart = cudart
        self.stream = _check(cudart.cudaStreamCreate())
        self.start = _check(cudart.cudaEventCreate())
        self.stop = _check(cudart.cudaEventCreate())
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, bytes)

    def buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least `nbytes`, allocated once and reused while big enough."""
        held = self.buffers.get(name)
        if held is not None and held[1] >= nbytes:
            return held[0]
        if held is not None:
            _check(self.cudart.cudaFree(held[0]))
        pointer = int(_check(self.cudart.cudaMalloc(max(nbytes, 1))))
        self.buffers[name] = (pointer, nbytes)
        return pointer

    def upload(self, name: str, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        pointer = self.buffer(name, array.nbytes)
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, self.stream))
        return pointer

    def download(self, name: str, out: np.ndarray) -> np.ndarray:
        pointer, _ = self.buffers[name]
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.cudart.cudaMemcpyAsync(out.ctypes.data_as(ctypes.c_void_p).value, pointer, out.nbytes, kind,
                                           self.stream))
        self.synchronize()
        return out

    def synchronize(self) -> None:
        _check(self.cudart.cudaStreamSynchronize(self.stream))

    def time_ms(self, work: Any) -> float:
        """Milliseconds that `work()` (which enqueues on this stream) takes on the GPU."""
        _check(self.cudart.cudaEventRecord(self.start, self.stream))
        work()
        _check(self.cudart.cudaEventRecord(self.stop, self.stream))
        _check(self.cudart.cudaEventSynchronize(self.stop))
        return float(_check(self.cudart.cudaEventElapsedTime(self.start, self.stop)))

    def close(self) -> None:
        for pointer, _ in self.buffers.values():
            self.cudart.cudaFree(pointer)
        self.buffers.clear()
        for handle, destroy in ((self.start, self.cudart.cudaEventDestroy), (self.stop, self.cudart.cudaEventDestroy),
                                (self.stream, self.cudart.cudaStreamDestroy)):
            if handle is not None:
                destroy(handle)
        self.start = self.stop = self.stream = None

    def __enter__(self) -> CudaStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
