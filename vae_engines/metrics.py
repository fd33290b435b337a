"""Audio quality of an output against a reference, on [B, C, S] arrays or tensors.

Computed in float64 with PyTorch on the device the tensors are on (numpy arrays: the CPU),
so a GPU evaluation does not copy minutes of audio to the host to measure it.

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

import math
from typing import Any

from vae_engines.core.lazy import lazy_import

torch = lazy_import("torch")

EPS = 1e-12
# (fft size, hop, window length) of Parallel WaveGAN's multi-resolution STFT loss
RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
POWER_FLOOR = 1e-7


def _f64(x: Any, device: Any = None) -> Any:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
    return t.to(device=device or t.device, dtype=torch.float64)


def _pair(ref: Any, out: Any) -> tuple[Any, Any]:
    """Both in float64 on one device: a GPU if either is there."""
    if tuple(ref.shape) != tuple(out.shape):
        raise ValueError(f"shapes differ: {tuple(ref.shape)} vs {tuple(out.shape)}")
    devices = [x.device for x in (ref, out) if isinstance(x, torch.Tensor) and x.device.type != "cpu"]
    device = devices[0] if devices else torch.device("cpu")
    return _f64(ref, device), _f64(out, device)


def peak_psnr(ref: Any, out: Any) -> float:
    ref, out = _pair(ref, out)
    rmse = float(((ref - out) ** 2).mean().sqrt())
    return 20 * math.log10(float(ref.abs().max()) / max(rmse, EPS))


def snr(ref: Any, out: Any) -> float:
    ref, out = _pair(ref, out)
    return 10 * math.log10(float((ref**2).sum()) / max(float(((ref - out) ** 2).sum()), EPS))


def crest_factor_db(ref: Any) -> float:
    ref = _f64(ref)
    return 20 * math.log10(float(ref.abs().max()) / max(float((ref**2).mean().sqrt()), EPS))


def si_sdr(ref: Any, out: Any) -> float:
    ref, out = _pair(ref, out)
    r = ref.reshape(-1, ref.shape[-1])
    o = out.reshape(-1, out.shape[-1])
    r = r - r.mean(dim=1, keepdim=True)
    o = o - o.mean(dim=1, keepdim=True)
    alpha = (o * r).sum(dim=1, keepdim=True) / (r * r).sum(dim=1, keepdim=True).clamp_min(EPS)
    target = alpha * r
    noise = o - target
    values = 10 * torch.log10((target**2).sum(dim=1).clamp_min(EPS) / (noise**2).sum(dim=1).clamp_min(EPS))
    return float(values.mean())


def _magnitude(x: Any, fft: int, hop: int, win: int) -> Any:
    signal = x.reshape(-1, x.shape[-1])
    spec = torch.stft(signal, n_fft=fft, hop_length=hop, win_length=win,
                      window=torch.hann_window(win, dtype=signal.dtype, device=signal.device), center=True,
                      pad_mode="reflect", return_complex=True)
    return torch.clamp(spec.real**2 + spec.imag**2, min=POWER_FLOOR).sqrt()


def mr_stft(ref: Any, out: Any) -> dict[str, float]:
    """Spectral convergence, log-magnitude distance and their sum, averaged over resolutions."""
    ref, out = _pair(ref, out)
    sc, mag = [], []
    for fft, hop, win in RESOLUTIONS:
        if ref.shape[-1] <= fft // 2:  # reflect padding needs more samples than half a frame
            continue
        a, b = _magnitude(ref, fft, hop, win), _magnitude(out, fft, hop, win)
        sc.append(float(torch.linalg.norm(a - b) / torch.linalg.norm(a).clamp_min(EPS)))
        mag.append(float((a.log() - b.log()).abs().mean()))
    if not sc:
        return {}
    return {"mr_stft": sum(sc) / len(sc) + sum(mag) / len(mag), "mr_stft_sc": sum(sc) / len(sc),
            "mr_stft_logmag": sum(mag) / len(mag)}


def max_abs_error(ref: Any, out: Any) -> float:
    ref, out = _pair(ref, out)
    return float((ref - out).abs().max())


def all_metrics(ref: Any, out: Any) -> dict[str, float]:
    """Every metric of `out` against `ref` (the STFT ones only where the clip is long enough)."""
    return {
        "peak_psnr_db": round(peak_psnr(ref, out), 3),
        "snr_db": round(snr(ref, out), 3),
        "si_sdr_db": round(si_sdr(ref, out), 3),
        **{k: round(v, 5) for k, v in mr_stft(ref, out).items()},
        "max_abs_error": float(f"{max_abs_error(ref, out):.4g}"),
    }
