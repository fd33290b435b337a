"""Latency, streaming and memory of runtime Decoders measured side by side, in one process.

Comparisons hold only between numbers of the same run, so the decoders compared take
turns: after warm-up at that length, every round times each of them once (in an order that rotates round
to round), and a ratio is the median of the per-round ratios, with a 95% bootstrap
interval. A difference is called only where that interval excludes 1 ("no measurable
difference" otherwise). Warm-up is per length: a decoder's first call at a length it has not
run (a CUDA graph recorded, a kernel compiled for the shape) is timed apart as `first_call_ms`
and never enters the rounds or their percentiles, and `warmup` more calls are not timed (a
CUDA-graph engine records its graph on the second call). A decode on a GPU is timed with CUDA events on the current stream
(the latent already on the device); on a CPU with the wall clock. Nothing here gates a
test: speed figures live in the reports.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil

from vae_engines.core.clock import call_ms
from vae_engines.core.lazy import lazy_import
from vae_engines.metrics import peak_psnr
from vae_engines.runtime.base import Decoder
from vae_engines.runtime.stream import stream_decode, windows

torch = lazy_import("torch")
BOOTSTRAP = 2000


@dataclass
class Timing:
    """One decoder at one (batch, frames): every round's milliseconds and their summary."""

    series: str  # e.g. "minmax (tensorrt_rtx)"
    batch: int
    frames: int
    ms: list[float] = field(default_factory=list)
    first_call_ms: float | None = None  # the first call at this length, timed apart (never in `ms`)

    def summary(self) -> dict:
        a = np.array(self.ms)
        first = None if self.first_call_ms is None else round(self.first_call_ms, 3)
        return {**asdict(self), "ms": [round(v, 3) for v in self.ms], "first_call_ms": first, "median_ms": round(float(np.median(a)), 3),
                "p10_ms": round(float(np.percentile(a, 10)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
                "min_ms": round(float(a.min()), 3)}


def paired_ratio(subject: Timing, reference: Timing, seed: int = 0) -> dict:
    """reference / subject per round (> 1: subject is faster): median, 95% bootstrap
    interval of the median, and the verdict that interval supports."""
    ratios = np.array(reference.ms) / np.array(subject.ms)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(ratios, size=(BOOTSTRAP, len(ratios)), replace=True), axis=1)
    lo, hi = (float(v) for v in np.percentile(medians, [2.5, 97.5]))
    verdict = "faster" if lo > 1 else "slower" if hi < 1 else "no measurable difference"
    return {"subject": subject.series, "reference": reference.series, "batch": subject.batch,
            "frames": subject.frames, "median_ratio": round(float(np.median(ratios)), 3),
            "ci95": [round(lo, 3), round(hi, 3)], "rounds": len(ratios), "verdict": verdict}


def time_ms(decoder: Decoder, x: Any) -> float:
    """Milliseconds of one decode of `x` (already on the decoder's device), as its caller sees it."""
    return call_ms(lambda: decoder.decode(x), decoder.device)


def seeded_latent(batch: int, channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, channels, frames)).astype(np.float32)


def warm_up(decoder: Decoder, x: Any, warmup: int) -> float:
    """The first call's milliseconds at x's shape, then `warmup` calls more, not timed."""
    first = time_ms(decoder, x)
    for _ in range(warmup):
        decoder.decode(x)
    return first


def turns(names: list, r: int) -> list:
    """The order of round r of rounds taking turns: `names` rotated by r // 2, reversed in odd rounds,
    so that each one runs right after each of its neighbours about as often. With a plain rotation of
    four engines each follows the same other in three rounds of four: two identical fp16 engines timed
    that way on the H100, one mostly after an fp16 decode and one mostly after an INT8 one, had medians
    2% apart, their 95% interval excluding 1 (benchmarks/results/README.md, "Run 19"). In this order
    (run 20) two identical INT8 engines still had medians 2.2-2.7% apart, their intervals holding 1:
    the order was not the whole cause, and a ratio within about 3% of 1 is no difference."""
    k = (r // 2) % len(names)
    order = list(names[k:]) + list(names[:k])
    return order[::-1] if r % 2 else order


def interleaved(decoders: dict[str, Decoder], batch: int, frames: int, channels: int, warmup: int, repeats: int,
                seed: int = 0) -> dict[str, Timing]:
    """Each decoder's time on one seeded latent, `repeats` rounds taking turns, after its
    first call at this length (timed apart) and `warmup` untimed calls."""
    latent = seeded_latent(batch, channels, frames, seed)
    inputs = {name: d.prepare(latent) for name, d in decoders.items()}
    names = list(decoders)
    timings = {name: Timing(name, batch, frames) for name in names}
    for name in names:
        timings[name].first_call_ms = warm_up(decoders[name], inputs[name], warmup)
    for r in range(repeats):
        for name in turns(names, r):
            timings[name].ms.append(time_ms(decoders[name], inputs[name]))
    return timings


def weight_bytes(decoder: Decoder) -> int:
    """Bytes of the decoder's own weights on its device (0 where the kind holds none in torch)."""
    module = getattr(decoder, "module", None)
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def device_memory_gib(decoder: Decoder, run: Any) -> float | None:
    """Device memory (GiB) of what `run()` decodes with `decoder` alone: PyTorch's peak
    allocation during it beyond what was allocated before, plus the decoder's weights --
    its footprint even while other decoders share the device. None on a CPU."""
    if decoder.device.type != "cuda":
        return None
    torch.cuda.synchronize(decoder.device)
    before = torch.cuda.memory_allocated(decoder.device)
    torch.cuda.reset_peak_memory_stats(decoder.device)
    run()
    torch.cuda.synchronize(decoder.device)
    peak = torch.cuda.max_memory_allocated(decoder.device)
    return round((peak - before + weight_bytes(decoder)) / 2**30, 3)


def streaming(decoder: Decoder, channels: int, total: int, window: int, overlap: int, seed: int = 0,
              warmup: int = 1) -> dict:
    """A `total`-frame latent decoded in windows as a streaming app does: per-call latency,
    real-time factor, peak device memory, and the stitched audio against the full decode.
    Every window length the stream uses (the last window may be shorter) is warmed up first."""
    latent = decoder.to_device(seeded_latent(1, channels, total, seed))
    spans = windows(total, window, overlap)
    for a, b in {b - a: (a, b) for a, b in spans}.values():
        warm_up(decoder, latent[..., a:b], warmup)
    calls = np.array([time_ms(decoder, latent[..., a:b]) for a, b in spans])
    pieces: list[Any] = []
    peak = device_memory_gib(decoder, lambda: pieces.extend(stream_decode(decoder, latent, window, overlap)))
    if not pieces:
        pieces = list(stream_decode(decoder, latent, window, overlap))
    stitched = torch.cat(pieces, dim=-1)
    audio_seconds = total * decoder.shape.hop / decoder.shape.sampling_rate
    out = {"window_frames": window, "overlap_frames": overlap, "total_frames": total, "calls": len(calls),
           "per_call_median_ms": round(float(np.median(calls)), 3), "per_call_max_ms": round(float(calls.max()), 3),
           "real_time_factor": round(float(calls.sum() / 1e3 / audio_seconds), 4),
           "window_audio_ms": round(window * decoder.shape.hop / decoder.shape.sampling_rate * 1e3, 1),
           "peak_device_memory_gib": peak}
    frames = decoder.shape.frames
    if frames is None or frames[0] <= total <= frames[1]:
        full = decoder.decode(latent)
        out["stitched_psnr_vs_full_db"] = round(peak_psnr(full.cpu().numpy(), stitched.cpu().numpy()), 2)
    else:
        out["stitched_psnr_vs_full_db"] = f"not measured: the engine's profile stops at {frames[1]} frames"
    return out


class PeakRss:
    """Samples this process's resident memory every 20 ms while active (host memory)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
