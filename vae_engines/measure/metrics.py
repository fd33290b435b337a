"""Audio quality metrics of an output against a reference, on [B, C, S] float arrays.

peak_psnr is the reference project's definition, 20*log10(max|ref| / RMSE), so figures
compare with its 32.5 dB; snr is full-scale (signal power over error power); si_sdr is
scale-invariant SDR per channel, averaged; stft_distance is the mean L1 distance of log
magnitudes over several window sizes.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12
STFT_WINDOWS = (256, 1024, 4096)


def _check(ref: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if ref.shape != out.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {out.shape}")
    return ref.astype(np.float64), out.astype(np.float64)


def peak_psnr(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = _check(ref, out)
    rmse = np.sqrt(np.mean((ref - out) ** 2))
    return float(20 * np.log10(np.abs(ref).max() / max(rmse, EPS)))


def snr(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = _check(ref, out)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), EPS)))


def si_sdr(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = _check(ref, out)
    r = ref.reshape(-1, ref.shape[-1])
    o = out.reshape(-1, out.shape[-1])
    r = r - r.mean(axis=1, keepdims=True)
    o = o - o.mean(axis=1, keepdims=True)
    alpha = (o * r).sum(axis=1, keepdims=True) / np.maximum((r * r).sum(axis=1, keepdims=True), EPS)
    target = alpha * r
    noise = o - target
    values = 10 * np.log10(np.maximum((target**2).sum(axis=1), EPS) / np.maximum((noise**2).sum(axis=1), EPS))
    return float(values.mean())


def _log_mag(x: np.ndarray, n_fft: int) -> np.ndarray:
    from scipy.signal import stft

    _, _, z = stft(x, nperseg=n_fft, noverlap=n_fft * 3 // 4, axis=-1, boundary=None, padded=True)
    return np.log10(np.abs(z) + 1e-5)


def stft_distance(ref: np.ndarray, out: np.ndarray, windows: tuple[int, ...] = STFT_WINDOWS) -> float:
    ref, out = _check(ref, out)
    usable = [n for n in windows if n <= ref.shape[-1]] or [min(windows)]
    return float(np.mean([np.mean(np.abs(_log_mag(ref, n) - _log_mag(out, n))) for n in usable]))


def max_abs_error(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = _check(ref, out)
    return float(np.abs(ref - out).max())


def all_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    return {
        "peak_psnr_db": round(peak_psnr(ref, out), 3),
        "snr_db": round(snr(ref, out), 3),
        "si_sdr_db": round(si_sdr(ref, out), 3),
        "stft_distance": round(stft_distance(ref, out), 5),
        "max_abs_error": float(f"{max_abs_error(ref, out):.4g}"),
    }
