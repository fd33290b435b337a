"""The built-in corpus: seeded, music-like stereo audio written as files.

Chords of harmonic tones with attack / decay envelopes, a bass line, kicks, noise-burst
snares and hats, sharp clicks, quiet passages and silence, at varied tempo and loudness.
Work is done per note event over whole numpy slices (tens of events a second), so minutes
of audio take seconds. The `corpus` stage writes it to data/corpus/ as FLAC files, the
default calibration and held-out folder: the pipeline reads the same kind of input a
user's own folder of music is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from vae_engines.core.fileio import atomic_path, write_json


def _tone(freqs: np.ndarray, t: np.ndarray, harmonics: int, brightness: float, phase: np.ndarray) -> np.ndarray:
    """Sum of harmonics k*f with amplitude brightness**(k-1)/k; freqs [E, 1], t [L]."""
    out = np.zeros((freqs.shape[0], t.shape[0]), dtype=np.float32)
    for k in range(1, harmonics + 1):
        amp = (brightness ** (k - 1)) / k
        out += amp * np.sin(2 * np.pi * k * freqs * t + k * phase).astype(np.float32)
    return out


class _Mix:
    """A stereo buffer that note events are rendered into, each with a random pan."""

    def __init__(self, n: int, sr: int, rng: np.random.Generator) -> None:
        self.out = np.zeros((2, n), dtype=np.float32)
        self.n, self.sr, self.rng = n, sr, rng

    def add(self, events_t: np.ndarray, length: float, render: Callable[[int, np.ndarray], np.ndarray]) -> None:
        """Render events of `length` seconds starting at events_t (s), add with random pan."""
        L = int(length * self.sr)  # noqa: N806
        t = np.arange(L, dtype=np.float32) / self.sr
        if len(events_t) == 0 or L == 0:
            return
        sig = render(len(events_t), t)  # [E, L]
        pan = self.rng.uniform(0.2, 0.8, size=len(events_t)).astype(np.float32)
        for e, start in enumerate((events_t * self.sr).astype(int)):
            stop = min(self.n, start + L)
            if stop <= start:
                continue
            self.out[0, start:stop] += (1 - pan[e]) * sig[e, : stop - start]
            self.out[1, start:stop] += pan[e] * sig[e, : stop - start]


def _harmony(mix: _Mix, rng: np.random.Generator, seconds: float, beat: float) -> None:
    """Chords (one per bar of 4 beats, 3-4 harmonic notes, slow attack and decay) and a
    plucked bass line on the chord roots, in eighths or quarters."""
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    minor = rng.random() < 0.5
    triad = np.array([0, 3 if minor else 4, 7, 10 if rng.random() < 0.3 else 12])
    progression = rng.choice([0, 5, 7, 9, 3, 10], size=4)
    bars = np.arange(0.0, seconds, beat)[::4]
    for voice in triad:
        chord_roots = progression[np.arange(len(bars)) % 4]
        freqs = (root * 2 * 2 ** ((chord_roots + voice) / 12)).astype(np.float32)[:, None]
        attack, decay = rng.uniform(0.005, 0.08), rng.uniform(0.4, 2.0)
        amp = rng.uniform(0.05, 0.15)

        def chord(E, t, freqs=freqs, attack=attack, decay=decay, amp=amp):  # noqa: N803
            env = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
            return amp * env * _tone(freqs, t, harmonics=6, brightness=rng.uniform(0.3, 0.7),
                                     phase=rng.uniform(0, 6.28, size=(E, 1)).astype(np.float32))

        mix.add(bars, 4 * beat, chord)
    step = beat / (2 if rng.random() < 0.5 else 1)
    bass_t = np.arange(0.0, seconds, step)
    bass_f = (root / 2 * 2 ** (progression[(bass_t // (4 * beat)).astype(int) % 4] / 12)).astype(np.float32)[:, None]
    mix.add(bass_t, step, lambda E, t: 0.25 * np.exp(-t / (step * 0.6)) * _tone(bass_f, t, 4, 0.5,
                                                                                 np.zeros((E, 1), np.float32)))


def _drums(mix: _Mix, rng: np.random.Generator, seconds: float, beat: float) -> None:
    """A kick on beats 1 and 3 (a falling sine), noise-burst snares, brighter hats, and a
    few single-sample clicks: the sharp transients."""
    beats = np.arange(0.0, seconds, beat)
    mix.add(beats[::2], 0.25, lambda E, t: np.repeat((0.6 * np.exp(-t / 0.06) * np.sin(
        2 * np.pi * (50 * t + 60 * 0.03 * (1 - np.exp(-t / 0.03)))))[None], E, 0).astype(np.float32))
    mix.add(beats[1::2], 0.18, lambda E, t: (0.3 * np.exp(-t / 0.05) * rng.standard_normal((E, t.size))).astype(
        np.float32))
    hats = np.arange(beat / 2, seconds, beat / 2)
    mix.add(hats, 0.05, lambda E, t: (0.15 * np.exp(-t / 0.012) * np.diff(
        rng.standard_normal((E, t.size + 1)), axis=1)).astype(np.float32))
    clicks = rng.integers(0, mix.n, size=max(1, int(seconds)))
    mix.out[:, clicks] += rng.uniform(-0.8, 0.8, size=(2, clicks.size)).astype(np.float32)


def _structure(out: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Quiet passages and silence in 0.5 s segments, and a loudness that varies clip to clip."""
    n = out.shape[1]
    seg = int(0.5 * sr)
    gains = rng.choice([1.0, 1.0, 1.0, 0.3, 0.03, 0.0], size=math.ceil(n / seg)).astype(np.float32)
    env = np.repeat(gains, seg)[:n]
    ramp = int(0.01 * sr)
    env = np.convolve(env, np.ones(ramp, np.float32) / ramp, mode="same")
    out *= env
    peak = float(np.abs(out).max())
    if peak > 0:
        out *= 10 ** (rng.uniform(-20, -1) / 20) / peak
    return out


def music_clip(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One stereo clip [2, S] of music-like audio, peak in [-1, 1]."""
    mix = _Mix(int(round(seconds * sr)), sr, rng)
    beat = 60.0 / rng.uniform(70, 170)
    _harmony(mix, rng, seconds, beat)
    _drums(mix, rng, seconds, beat)
    return _structure(mix.out, rng, sr)


def music_clips(count: int, seconds: float, sr: int, seed: int) -> np.ndarray:
    """`count` clips [count, 2, S], reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return np.stack([music_clip(seconds, sr, rng) for _ in range(count)])


def write_corpus(out_dir: str | Path, clips: int, seconds: float, sr: int, seed: int) -> Path:
    """`clips` FLAC files of `seconds` each (clip_000.flac ...), reproducible from `seed`."""
    audio = music_clips(clips, seconds, sr, seed)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        for index, clip in enumerate(audio):
            sf.write(str(tmp / f"clip_{index:03d}.flac"), np.clip(clip.T, -1, 1), sr, subtype="PCM_16", format="FLAC")
        write_json(tmp / "corpus.json", {"generator": "vae_engines.data.corpus", "clips": clips, "seconds": seconds,
                                         "sampling_rate": sr, "seed": seed})
    return out_dir
