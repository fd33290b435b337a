"""Latent sets for calibration and evaluation: sources behind one reader, one on-disk form.

A set on disk is a directory with `latents.npy` ([N, C, T] float32) and `manifest.json`
(source, files with their sha256, conversions, shapes, per-channel statistics). Every
source yields windows of exactly `frames` frames.

Bad input, by design: a file that cannot be read, is empty, has the wrong rank, channel
count or dtype, or holds NaN / Inf is an error naming the file (it would poison the
scales). A file shorter than one window is skipped with a warning (a folder of generator
outputs of mixed lengths should just work); if nothing usable is left, that is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)

LATENT_SUFFIXES = (".npy", ".pt", ".safetensors")


def _read_latent_file(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".pt":
            import torch

            arr = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(arr, dict):
                arr = next(iter(arr.values()))
            arr = arr.float().numpy() if hasattr(arr, "numpy") else np.asarray(arr)
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise UserError(f"{path} holds {len(tensors)} tensors; save one latent per file")
            arr = next(iter(tensors.values()))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path} is not a readable latent file ({type(exc).__name__}: {str(exc)[:80]}); "
                        "re-save or remove it") from None
    return arr


def check_latent(arr: Any, channels: int, where: str) -> np.ndarray:
    """[C, T] float32 from [1, C, T] or [C, T]; errors name `where`."""
    arr = np.asarray(arr)
    if arr.dtype.kind != "f":
        raise UserError(f"{where}: dtype {arr.dtype} is not floating point; save latents as float16/32")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise UserError(f"{where}: shape {list(arr.shape)} is not [1, {channels}, T] or [{channels}, T]")
    if arr.shape[0] != channels:
        raise UserError(f"{where}: {arr.shape[0]} channels, the model takes {channels}; these latents are "
                        "from another model")
    if arr.shape[1] == 0:
        raise UserError(f"{where}: zero frames; remove the file")
    if not np.isfinite(arr).all():
        raise UserError(f"{where}: contains NaN or Inf; regenerate or remove it")
    return arr.astype(np.float32)


def _files(folder: str | None, suffixes: tuple[str, ...], what: str) -> list[Path]:
    if not folder:
        raise UserError(f"a folder of {what} is required (set path in params.yaml)")
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; set path to the folder of {what}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        raise UserError(f"{root} has no {what} ({', '.join(suffixes)} files); add some or change path")
    return files


def _windows(arr: np.ndarray, frames: int) -> Iterator[np.ndarray]:
    for start in range(0, arr.shape[-1] - frames + 1, frames):
        yield arr[..., start:start + frames]


def latents_from_folder(folder: str | None, count: int, frames: int, channels: int) -> tuple[np.ndarray, list[dict]]:
    """Windows of `frames` cut from a folder of latent tensors, in file-name order."""
    out, records = [], []
    for path in _files(folder, LATENT_SUFFIXES, "latent tensors"):
        arr = check_latent(_read_latent_file(path), channels, str(path))
        record = {"file": str(path), "sha256": sha256_file(path), "shape": list(arr.shape), "notes": []}
        if arr.shape[1] < frames:
            log.warning("skipping %s: %d frames, shorter than the %d-frame window", path, arr.shape[1], frames)
            record["notes"].append(f"skipped: shorter than {frames} frames")
        else:
            for w in _windows(arr, frames):
                if len(out) < count:
                    out.append(w)
        records.append(record)
    if not out:
        raise UserError(f"no latent in {folder} has {frames} frames; lower frames or add longer latents")
    return np.stack(out), records


def channel_stats(folder: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every frame of a folder of real latents."""
    arrays = [check_latent(_read_latent_file(p), channels, str(p)) for p in _files(folder, LATENT_SUFFIXES,
                                                                                   "latent tensors")]
    cat = np.concatenate(arrays, axis=1)
    return cat.mean(axis=1), cat.std(axis=1)


def synthetic_latents(count: int, frames: int, channels: int, seed: int,
                      stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Seeded normal latents, optionally shaped by real per-channel mean and std."""
    x = np.random.default_rng(seed).standard_normal((count, channels, frames)).astype(np.float32)
    if stats is not None:
        mean, std = stats
        x = x * std[None, :, None].astype(np.float32) + mean[None, :, None].astype(np.float32)
    return x


def audio_windows(folder: str | None, count: int, samples: int, sr: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """Stereo windows of `samples` from a folder of audio files, or from the built-in
    corpus when folder is None."""
    from vae_engines.data.audio import AUDIO_SUFFIXES, music_clips, read_audio

    if folder is None:
        clips = music_clips(count, samples / sr, sr, seed)
        return clips, [{"file": f"built-in corpus (seed {seed})", "clips": count, "notes": []}]
    out, records = [], []
    for path in _files(folder, AUDIO_SUFFIXES, "audio files"):
        audio, notes = read_audio(path, sr)
        record = {"file": str(path), "sha256": sha256_file(path), "samples": int(audio.shape[1]), "notes": notes}
        if audio.shape[1] < samples:
            log.warning("skipping %s: %d samples, shorter than one %d-sample window", path, audio.shape[1], samples)
            record["notes"].append("skipped: shorter than one window")
        for w in _windows(audio, samples):
            if len(out) < count:
                out.append(w)
        records.append(record)
    if not out:
        raise UserError(f"no audio file in {folder} is long enough for a {samples}-sample window; lower frames")
    return np.stack(out), records


def encode_audio(vae: Any, audio: np.ndarray, progress: bool = True) -> np.ndarray:
    """Posterior means [N, C, T] of audio windows [N, 2, S], one window at a time."""
    import torch
    from tqdm import tqdm

    out = []
    with torch.no_grad():
        for clip in tqdm(audio, desc="encoding", unit="clip", disable=not progress, leave=False):
            out.append(vae.encode(torch.from_numpy(clip[None])).latent_dist.mean[0].numpy())
    return np.stack(out).astype(np.float32)


def collect_latents(params: Any, frames: int, loaded: Any) -> tuple[np.ndarray, dict]:
    """Latents [N, C, frames] and manifest fields for LatentSetParams `params`."""
    channels = loaded.latent_channels
    manifest: dict = {"source": params.source, "frames": frames, "seed": params.seed, "model": loaded.description}
    if params.source == "synthetic":
        stats = channel_stats(params.stats, channels) if params.stats else None
        latents = synthetic_latents(params.count, frames, channels, params.seed, stats)
        manifest["files"] = [] if not params.stats else [{"file": params.stats, "use": "per-channel stats"}]
    elif params.source == "latents":
        latents, manifest["files"] = latents_from_folder(params.path, params.count, frames, channels)
    else:
        if not loaded.has_encoder:
            raise UserError("source 'audio' needs the VAE encoder but the checkpoint holds only the decoder; use "
                            "a whole-VAE checkpoint or source 'latents'")
        audio, manifest["files"] = audio_windows(params.path, params.count, frames * loaded.hop,
                                                 loaded.sampling_rate, params.seed)
        latents = encode_audio(loaded.vae, audio)
    if len(latents) < params.count:
        log.warning("only %d windows of %d frames available, %d asked for", len(latents), frames, params.count)
    return latents, manifest


def write_latent_set(out_dir: str | Path, latents: np.ndarray, manifest: dict,
                     extra_arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write latents.npy (+ extra arrays) and manifest.json into `out_dir`, atomically."""
    manifest = {
        **manifest,
        "count": int(latents.shape[0]),
        "shape": list(latents.shape),
        "channel_mean": latents.mean(axis=(0, 2)).round(6).tolist(),
        "channel_std": latents.std(axis=(0, 2)).round(6).tolist(),
        "channel_min": latents.min(axis=(0, 2)).round(6).tolist(),
        "channel_max": latents.max(axis=(0, 2)).round(6).tolist(),
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir, is_dir=True) as tmp:
        np.save(tmp / "latents.npy", latents.astype(np.float32))
        for name, arr in (extra_arrays or {}).items():
            np.save(tmp / f"{name}.npy", arr)
        manifest["sha256"] = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.npy"))}
        write_json(tmp / "manifest.json", manifest)
    return out_dir


def read_latent_set(directory: str | Path, name: str = "latents") -> np.ndarray:
    path = Path(directory) / f"{name}.npy"
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `dvc repro` to make it")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}); delete it and run `dvc repro`") from None
