"""Two clocks for a call on a GPU: as its caller sees it (`call_ms`), and its kernels alone (`kernel_ms`).

Timed between two CUDA events on an idle GPU, a call also counts the host's work to launch it: the start
event fires as soon as it is queued, and the kernel starts only once Python has run the module, made its
TMA descriptors and bound Triton's arguments. A decode replays a CUDA graph, where no such work separates
the kernels, so a layer's time in the tune stage and in the layer table has to leave it out. Here the GPU
is given a spin first (torch.cuda._sleep, a kernel that waits a number of clock cycles), long enough that
the start event, the call's kernels and the end event are all queued before it ends; the events then
bracket the kernels alone, back to back (`kernel_ms`). Every timed call checks it: where queuing took
more than half the spin, that call is timed again behind a spin twice as long.

Before this (the tune records and layer tables up to run 20, benchmarks/results/), each layer's time held
its launch's host work too: on the H100 run 20's 28 fp16 layer and unit kernels, timed alone, added to
19.97 ms, where the same run's decodes of that length took 17.22-17.65 ms.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from vae_engines.core.lazy import lazy_import

torch = lazy_import("torch")

LEAD_MS = 0.5  # the shortest spin; a Triton layer's launch takes the host a fraction of it
LONGEST_MS = 200.0  # a call that needs a longer spin than this waits for the GPU while queuing
_CALIBRATION_CYCLES = 10_000_000
_cycles_per_ms: dict[int, float] = {}


def host_ms() -> float:
    """The host's clock, in milliseconds."""
    return time.perf_counter() * 1e3


def call_ms(fn: Callable[[], Any], device: Any) -> float:
    """Milliseconds of one call of `fn()` as its caller sees it: CUDA events on the current stream from
    an idle GPU, so the host's work to queue it counts (a decode's figure); on a CPU the wall clock."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    began = host_ms()
    fn()
    return host_ms() - began


def cycles_per_ms(device: Any) -> float:
    """Clock cycles of torch.cuda._sleep per millisecond on `device` (timed once per process)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _cycles_per_ms:
        with torch.cuda.device(index):
            torch.cuda._sleep(_CALIBRATION_CYCLES // 10)  # the first launch loads the kernel
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(_CALIBRATION_CYCLES)
            end.record()
            end.synchronize()
            _cycles_per_ms[index] = _CALIBRATION_CYCLES / start.elapsed_time(end)
    return _cycles_per_ms[index]


def kernel_ms(fn: Callable[[], Any], device: Any, repeats: int = 5, warmup: int = 2) -> float:
    """Median milliseconds of `fn()` over `repeats` calls after `warmup` untimed ones: on a GPU the
    kernels it queues on the current stream, timed behind a spin that hides the host's work; on a CPU
    the wall clock."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        return sorted(call_ms(fn, device) for _ in range(repeats))[repeats // 2]
    times: list[float] = []
    rate = cycles_per_ms(device)
    torch.cuda.synchronize(device)
    lead = LEAD_MS
    while len(times) < repeats:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        began = host_ms()
        torch.cuda._sleep(int(lead * rate))
        start.record()
        fn()
        end.record()
        queued_ms = host_ms() - began
        end.synchronize()
        if queued_ms <= lead / 2:
            times.append(start.elapsed_time(end))
        elif lead < LONGEST_MS:
            lead *= 2
        else:
            raise RuntimeError(f"queuing this call took {queued_ms:.1f} ms behind a {lead:.0f} ms spin: it waits "
                               "for the GPU (a synchronizing call inside it), so its kernels cannot be timed apart "
                               "from the host; remove the synchronization from the timed call")
    return sorted(times)[len(times) // 2]
