"""Latency, streaming and memory of runtimes measured side by side in one process.

Ratios (speedup vs fp32, vs fp16) are only ever computed between numbers of the same
run. Nothing here gates a test: speed targets live in the report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


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


def time_calls(fn: Callable[[np.ndarray], Any], x: np.ndarray, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "min_ms": round(float(ms.min()), 3), "repeats": repeats}


def stream_windows(total: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(start, stop) frame windows covering `total` with `overlap`, each `window` long."""
    step = window - overlap
    starts = list(range(0, max(total - window, 0) + 1, step))
    if starts[-1] + window < total:
        starts.append(total - window)
    return [(s, s + window) for s in starts]


def streaming(fn: Callable[[np.ndarray], Any], channels: int, total: int, window: int, overlap: int,
              hop: int, sr: int, seed: int = 0) -> dict:
    """Decode a `total`-frame latent in overlapping windows, as a streaming app does."""
    latent = np.random.default_rng(seed).standard_normal((1, channels, total)).astype(np.float32)
    fn(latent[..., :window])  # warm-up
    calls = []
    for start, stop in stream_windows(total, window, overlap):
        t0 = time.perf_counter()
        fn(latent[..., start:stop])
        calls.append(time.perf_counter() - t0)
    ms = np.array(calls) * 1e3
    audio_seconds = total * hop / sr
    return {"window_frames": window, "overlap_frames": overlap, "total_frames": total, "calls": len(calls),
            "per_call_median_ms": round(float(np.median(ms)), 3), "per_call_max_ms": round(float(ms.max()), 3),
            "real_time_factor": round(float(ms.sum() / 1e3 / audio_seconds), 4),
            "window_audio_ms": round(window * hop / sr * 1e3, 1)}


def sweep(runtimes: dict[str, Any], frames: tuple[int, ...], batches: tuple[int, ...], channels: int,
          warmup: int, repeats: int, progress: Any = None) -> tuple[dict, dict]:
    """Latency of every runtime at every (batch, frames); returns (latency, peak_rss_bytes)."""
    latency: dict[str, dict] = {name: {} for name in runtimes}
    rss: dict[str, int] = {}
    rng = np.random.default_rng(0)
    for name, runtime in runtimes.items():
        with PeakRss() as peak:
            for batch in batches:
                for f in frames:
                    x = rng.standard_normal((batch, channels, f)).astype(np.float32)
                    latency[name][f"b{batch}_f{f}"] = time_calls(runtime.decode, x, warmup, repeats)
                    if progress:
                        progress.update(1)
        rss[name] = peak.peak
    return latency, rss


def ratios(latency: dict[str, dict], subject: str, reference: str) -> dict[str, float]:
    """reference median / subject median per point: > 1 means subject is faster."""
    out = {}
    for point, stats in latency.get(subject, {}).items():
        ref = latency.get(reference, {}).get(point)
        if ref:
            out[point] = round(ref["median_ms"] / stats["median_ms"], 3)
    return out
