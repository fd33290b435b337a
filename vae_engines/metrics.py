"""Audio quality of an output against a reference, on [B, C, S] float arrays.

- peak_psnr: the reference project's definition, 20*log10(max|ref| / RMSE), so figures
  compare with its 32.5 dB. It equals snr + the reference's crest factor
  (20*log10(peak / RMS)): peak PSNR grows with how spiky the reference is.
- snr: signal power over error power.
- si_sdr: scale-invariant SDR per channel, averaged.
- mr_stft: the multi-resolution STFT distance of Parallel WaveGAN (Yamamoto et al., 2020):
  spectral convergence ||S_ref| - |S_out||_F / ||S_ref||_F plus the mean absolute
  difference of log magnitudes, averaged over FFT sizes 512 / 1024 / 2048 (hop 50 / 120
  / 240, Hann windows of 240 / 600 / 1200), power floored at 1e-7 as there. Lower is better.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12
# (fft size, hop, window length) of Parallel WaveGAN's multi-resolution STFT loss
RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
POWER_FLOOR = 1e-7


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


def crest_factor_db(ref: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(20 * np.log10(np.abs(ref).max() / max(np.sqrt(np.mean(ref**2)), EPS)))


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


def _magnitude(x: np.ndarray, fft: int, hop: int, win: int) -> np.ndarray:
    import torch

    signal = torch.from_numpy(x.reshape(-1, x.shape[-1]))
    spec = torch.stft(signal, n_fft=fft, hop_length=hop, win_length=win,
                      window=torch.hann_window(win, dtype=signal.dtype), center=True, pad_mode="reflect",
                      return_complex=True)
    return torch.clamp(spec.real**2 + spec.imag**2, min=POWER_FLOOR).sqrt().numpy()


def mr_stft(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Spectral convergence, log-magnitude distance and their sum, averaged over resolutions."""
    ref, out = _check(ref, out)
    sc, mag = [], []
    for fft, hop, win in RESOLUTIONS:
        if ref.shape[-1] <= fft // 2:  # reflect padding needs more samples than half a frame
            continue
        a, b = _magnitude(ref, fft, hop, win), _magnitude(out, fft, hop, win)
        sc.append(np.linalg.norm(a - b) / max(np.linalg.norm(a), EPS))
        mag.append(np.mean(np.abs(np.log(a) - np.log(b))))
    if not sc:
        return {}
    return {"mr_stft": float(np.mean(sc) + np.mean(mag)), "mr_stft_sc": float(np.mean(sc)),
            "mr_stft_logmag": float(np.mean(mag))}


def max_abs_error(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = _check(ref, out)
    return float(np.abs(ref - out).max())


def all_metrics(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Every metric of `out` against `ref` (the STFT ones only where the clip is long enough)."""
    return {
        "peak_psnr_db": round(peak_psnr(ref, out), 3),
        "snr_db": round(snr(ref, out), 3),
        "si_sdr_db": round(si_sdr(ref, out), 3),
        **{k: round(v, 5) for k, v in mr_stft(ref, out).items()},
        "max_abs_error": float(f"{max_abs_error(ref, out):.4g}"),
    }
