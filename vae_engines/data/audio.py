"""Audio files in and out: any format libsndfile reads, converted to the model's layout.

Reading returns stereo float32 at the model's rate and says what it converted (mono
duplicated, extra channels dropped, resampled), so the manifest can record it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path
from vae_engines.core.lazy import lazy_import

sf = lazy_import("soundfile")  # the engine benchmarks import this module but never touch audio
signal = lazy_import("scipy.signal")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")


def read_audio(path: Path, sr: int, channels: int = 2) -> tuple[np.ndarray, list[str]]:
    """[channels, S] float32 at `sr`, and notes on what was converted (for the manifest)."""
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise UserError(f"{path} is not a readable audio file ({str(exc)[:80]}); remove or replace it") from None
    if data.shape[0] == 0:
        raise UserError(f"{path} has no samples; remove it from the folder")
    audio = data.T
    notes = []
    if audio.shape[0] == 1 and channels == 2:
        audio = np.repeat(audio, 2, axis=0)
        notes.append("mono duplicated to stereo")
    elif audio.shape[0] > channels:
        audio = audio[:channels]
        notes.append(f"kept the first {channels} of {data.shape[1]} channels")
    if file_sr != sr:
        g = math.gcd(int(file_sr), int(sr))
        audio = signal.resample_poly(audio, sr // g, int(file_sr) // g, axis=1).astype(np.float32)
        notes.append(f"resampled {file_sr} -> {sr} Hz")
    if not np.isfinite(audio).all():
        raise UserError(f"{path} contains NaN or Inf samples; fix or remove it")
    return audio, notes


def write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    """Write [C, S] float audio as 16-bit PCM wav, atomically."""
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(audio.T, -1, 1), sr, subtype="PCM_16", format="WAV")
