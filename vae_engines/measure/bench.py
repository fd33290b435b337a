"""Latency, streaming and memory of runtimes measured side by side, in one process.

Comparisons hold only between numbers of the same run, so the runtimes compared take
turns: after warm-up, every round times each of them once (in an order that rotates round
to round), and a ratio is the median of the per-round ratios, with a 95% bootstrap
interval. A difference is called only where that interval excludes 1 ("no measurable
difference" otherwise). Nothing here gates a test: speed figures live in the report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

BOOTSTRAP = 2000


@dataclass
class Timing:
    """One runtime at one (batch, frames): every round's milliseconds and their summary."""

    series: str  # e.g. "minmax (onnxruntime)"
    batch: int
    frames: int
    ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.ms))

    def summary(self) -> dict:
        a = np.array(self.ms)
        return {**asdict(self), "ms": [round(v, 3) for v in self.ms], "median_ms": round(float(np.median(a)), 3),
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


def interleaved(runtimes: dict[str, Any], batch: int, frames: int, channels: int, warmup: int, repeats: int,
                seed: int = 0) -> dict[str, Timing]:
    """Each runtime's `time_ms` on one seeded latent, `repeats` rounds taking turns."""
    x = np.random.default_rng(seed).standard_normal((batch, channels, frames)).astype(np.float32)
    names = list(runtimes)
    for name in names:
        for _ in range(warmup):
            runtimes[name].time_ms(x)
    timings = {name: Timing(name, batch, frames) for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            timings[name].ms.append(runtimes[name].time_ms(x))
    return timings


def stream_windows(total: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(start, stop) frame windows covering `total` with `overlap`, each `window` long."""
    step = window - overlap
    starts = list(range(0, max(total - window, 0) + 1, step))
    if starts[-1] + window < total:
        starts.append(total - window)
    return [(s, s + window) for s in starts]


def streaming(time_ms: Callable[[np.ndarray], float], channels: int, total: int, window: int, overlap: int,
              hop: int, sr: int, seed: int = 0) -> dict:
    """Decode a `total`-frame latent in overlapping windows, as a streaming app does."""
    latent = np.random.default_rng(seed).standard_normal((1, channels, total)).astype(np.float32)
    time_ms(latent[..., :window])  # warm-up
    calls = np.array([time_ms(latent[..., a:b]) for a, b in stream_windows(total, window, overlap)])
    audio_seconds = total * hop / sr
    return {"window_frames": window, "overlap_frames": overlap, "total_frames": total, "calls": len(calls),
            "per_call_median_ms": round(float(np.median(calls)), 3), "per_call_max_ms": round(float(calls.max()), 3),
            "real_time_factor": round(float(calls.sum() / 1e3 / audio_seconds), 4),
            "window_audio_ms": round(window * hop / sr * 1e3, 1)}


class PeakRss:
    """Samples this process's resident memory every 20 ms while active."""

    def __init__(self) -> None:
        import psutil

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
