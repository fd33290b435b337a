"""Calibration and held-out latent sets from a folder: audio, latent tensors, or synthetic
latents shaped by real ones; or seeded unit-normal latents, the scale a generator gives.
One reader, one on-disk form (data.latentset).

Held-out data is disjoint from calibration data by construction. When both name the same
folder of the same kind, its files are split by file: ranked by the sha256 of their path
inside the folder, the first `holdout.fraction` of them (at least one) are held out and
the rest calibrate; adding a file moves at most one other across the split. When they
name different folders, no file may appear in both (checked by content). The split and
the check are recorded in both manifests.

Windows are cut round-robin across files -- the first window of every file, then the
second, ... -- so that a few windows still come from many recordings. Bad input, by
design: a file that cannot be read, is empty, has the wrong rank, channel count or dtype,
or holds NaN / Inf is an error naming the file; a file shorter than one window is skipped
with a warning (recorded); if nothing usable is left, that is an error.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import
from vae_engines.core.fileio import sha256_file
from vae_engines.core.params import LatentSetParams
from vae_engines.data.audio import AUDIO_SUFFIXES, read_audio
from vae_engines.data.latentset import check_latent

if TYPE_CHECKING:
    from vae_engines.model.oobleck import LoadedVAE

torch = lazy_import("torch")
log = logging.getLogger(__name__)

LATENT_SUFFIXES = (".npy", ".pt", ".safetensors")


@dataclass(frozen=True)
class OtherSet:
    """What a set needs of the other one to stay disjoint from it: its folder and source,
    and the share of a shared folder that is held out."""

    path: str
    source: str
    fraction: float


@dataclass(frozen=True)
class Folder:
    """The files a set draws from, and how they were chosen (recorded in the manifest)."""

    root: Path
    files: list[Path]
    split: dict


def _suffixes(source: str) -> tuple[tuple[str, ...], str]:
    return (AUDIO_SUFFIXES, "audio files") if source == "audio" else (LATENT_SUFFIXES, "latent tensors")


def list_files(folder: str, source: str, key: str) -> list[Path]:
    suffixes, what = _suffixes(source)
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{key}: {root} is not a folder; set it to a folder of {what}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        raise UserError(f"{key}: {root} has no {what} ({', '.join(suffixes)} files); add some or change the path")
    return files


def _rank(path: Path, root: Path) -> str:
    return hashlib.sha256(path.relative_to(root).as_posix().encode()).hexdigest()


def split_by_file(files: list[Path], root: Path, fraction: float) -> tuple[list[Path], list[Path]]:
    """(calibration, holdout) files of one folder; see the module docstring."""
    if len(files) < 2:
        raise UserError(f"{root} has one file: it cannot be split into calibration and held-out data; add files "
                        "or give holdout.path its own folder")
    ranked = sorted(files, key=lambda p: _rank(p, root))
    held = min(max(1, round(fraction * len(files))), len(files) - 1)
    return sorted(ranked[held:]), sorted(ranked[:held])


def _stats_folder(source: str) -> str:
    # synthetic sets draw their per-channel statistics from a folder of latent tensors
    return "latents" if source == "synthetic" else source


def choose_files(role: str, mine: LatentSetParams, other: OtherSet) -> Folder:
    """The files `role` ('calibration' or 'holdout') reads, with the split record."""
    key = f"{role}.path"
    kind = _stats_folder(mine.source)
    root = Path(mine.path)
    if mine.source == "normal":
        return Folder(root, [], {"rule": "unit-normal latents: no folder is read",
                                 "disjoint": f"different seeds ({role} seed {mine.seed})"})
    files = list_files(mine.path, kind, key)
    same_folder = Path(other.path).resolve() == root.resolve() and _stats_folder(other.source) == kind
    if mine.source == "synthetic":
        return Folder(root, files, {"rule": "synthetic latents: the folder only gives per-channel statistics",
                                    "disjoint": f"different seeds ({role} seed {mine.seed})"})
    if same_folder:
        fraction = other.fraction
        calibration, holdout = split_by_file(files, root, fraction)
        chosen = calibration if role == "calibration" else holdout
        return Folder(root, chosen, {
            "rule": f"split by file: files ranked by sha256 of their path in {root}, the first "
                    f"{len(holdout)} of {len(files)} held out (holdout.fraction {fraction})",
            "disjoint": "by construction (no file is in both sets)",
            "calibration_files": [p.relative_to(root).as_posix() for p in calibration],
            "holdout_files": [p.relative_to(root).as_posix() for p in holdout]})
    if other.source == "normal":
        return Folder(root, files, {"rule": "every file (the other set draws unit-normal latents)",
                                    "disjoint": "by construction (the other set reads no file)"})
    theirs = list_files(other.path, _stats_folder(other.source), f"{'holdout' if role == 'calibration' else 'calibration'}.path")
    shared = _shared_files(files, theirs)
    if shared:
        raise UserError(f"{role}.path and the other set's folder share {len(shared)} identical file(s), e.g. "
                        f"{shared[0]}: held-out data must not be calibration data; remove them from one folder, or "
                        "point both at one folder to split it by file")
    return Folder(root, files, {"rule": "separate folders", "disjoint": "checked: no identical file in both folders"})


def _shared_files(mine: list[Path], theirs: list[Path]) -> list[str]:
    """Files of `mine` whose content equals a file of `theirs` (hashing only equal sizes)."""
    sizes: dict[int, list[Path]] = {}
    for p in theirs:
        sizes.setdefault(p.stat().st_size, []).append(p)
    shared = []
    for p in mine:
        candidates = sizes.get(p.stat().st_size, [])
        if candidates and sha256_file(p) in {sha256_file(q) for q in candidates}:
            shared.append(str(p))
    return shared


def _round_robin(lengths: list[int], window: int, count: int) -> list[tuple[int, int]]:
    """(file index, start) of up to `count` windows: window 0 of every file, then 1, ..."""
    available = [n // window for n in lengths]
    picks: list[tuple[int, int]] = []
    for w in range(max(available, default=0)):
        for i, n in enumerate(available):
            if w < n and len(picks) < count:
                picks.append((i, w * window))
    return picks


# -- latent tensors --------------------------------------------------------------------------
def read_latent_file(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".pt":
            arr = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(arr, dict):
                arr = next(iter(arr.values()))
            arr = arr.float().numpy() if hasattr(arr, "numpy") else np.asarray(arr)
        else:
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


def latent_windows(folder: Folder, frames: int, count: int, channels: int) -> tuple[np.ndarray, dict]:
    arrays = [check_latent(read_latent_file(p), channels, str(p)) for p in folder.files]
    return _cut(folder, arrays, frames, count, "frames")


def normal_latents(frames: int, count: int, channels: int, seed: int) -> tuple[np.ndarray, dict]:
    """Seeded unit-normal latents N(0, 1): what a diffusion sampler ends near, the scale an
    app hands the decoder (an encoder's posterior means can be far smaller)."""
    x = np.random.default_rng(seed).standard_normal((count, channels, frames)).astype(np.float32)
    return x, {"seed": seed, "distribution": "unit normal, independent per element"}


def synthetic_latents(folder: Folder, frames: int, count: int, channels: int, seed: int) -> tuple[np.ndarray, dict]:
    """Seeded normal latents with the per-channel mean and std of the folder's latents."""
    arrays = [check_latent(read_latent_file(p), channels, str(p)) for p in folder.files]
    cat = np.concatenate(arrays, axis=1)
    mean, std = cat.mean(axis=1), cat.std(axis=1)
    x = np.random.default_rng(seed).standard_normal((count, channels, frames)).astype(np.float32)
    x = x * std[None, :, None].astype(np.float32) + mean[None, :, None].astype(np.float32)
    return x, {"seed": seed, "statistics_from": {p.relative_to(folder.root).as_posix(): sha256_file(p)
                                                 for p in folder.files}}


# -- audio -------------------------------------------------------------------------------------
def audio_windows(folder: Folder, samples: int, count: int, sr: int) -> tuple[np.ndarray, dict]:
    arrays, notes = [], {}
    for path in folder.files:
        audio, converted = read_audio(path, sr)
        arrays.append(audio)
        if converted:
            notes[path.relative_to(folder.root).as_posix()] = converted
    windows, record = _cut(folder, arrays, samples, count, "samples")
    record["conversions"] = notes
    return windows, record


def _cut(folder: Folder, arrays: list[np.ndarray], window: int, count: int, unit: str) -> tuple[np.ndarray, dict]:
    lengths = [a.shape[-1] for a in arrays]
    skipped = []
    for path, n in zip(folder.files, lengths):
        if n < window:
            log.warning("skipping %s: %d %s, shorter than one %d-%s window", path, n, unit, window, unit)
            skipped.append(path.relative_to(folder.root).as_posix())
    picks = _round_robin(lengths, window, count)
    if not picks:
        raise UserError(f"no file in {folder.root} is long enough for a {window}-{unit} window; lower the frames or "
                        "add longer files")
    if len(picks) < count:
        log.warning("only %d windows of %d %s available in %s, %d asked for", len(picks), window, unit, folder.root,
                    count)
    used = sorted({i for i, _ in picks})
    digests = {i: sha256_file(folder.files[i]) for i in used}
    windows = [{"file": folder.files[i].relative_to(folder.root).as_posix(), "sha256": digests[i],
                f"start_{unit}": start, unit: window} for i, start in picks]
    stacked = np.stack([arrays[i][..., start:start + window] for i, start in picks])
    return stacked, {"windows": windows, "skipped_short_files": skipped}


def roundtrip_clips(folder: Folder, clips: int, frames: int, hop: int, sr: int) -> tuple[np.ndarray, dict]:
    """The first `frames` frames of audio of up to `clips` held-out files, for the wav round-trip."""
    samples = frames * hop
    out, used = [], []
    for path in folder.files:
        if len(out) == clips:
            break
        audio, _ = read_audio(path, sr)
        if audio.shape[1] >= samples:
            out.append(audio[:, :samples])
            used.append({"file": path.relative_to(folder.root).as_posix(), "sha256": sha256_file(path),
                         "start_samples": 0, "samples": samples})
    if not out:
        raise UserError(f"no held-out audio file in {folder.root} has {samples / sr:.1f} s for the wav round-trip; "
                        "lower holdout.roundtrip_seconds or set holdout.roundtrip_clips: 0")
    return np.stack(out).astype(np.float32), {"clips": used}


def collect_set(role: str, mine: LatentSetParams, other: OtherSet, frames: int, vae: LoadedVAE,
                encode: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, dict]:
    """Latents [N, C, frames] and manifest fields of one set. vae: model.oobleck.LoadedVAE;
    encode(audio [N, 2, S]) -> latents."""
    folder = choose_files(role, mine, other)
    manifest: dict = {"role": role, "source": mine.source, "path": str(folder.root), "frames": frames,
                      "split": folder.split, "model": vae.description}
    channels = vae.latent_channels
    if mine.source == "normal":
        latents, record = normal_latents(frames, mine.count, channels, mine.seed)
    elif mine.source == "synthetic":
        latents, record = synthetic_latents(folder, frames, mine.count, channels, mine.seed)
    elif mine.source == "latents":
        latents, record = latent_windows(folder, frames, mine.count, channels)
    else:
        if not vae.has_encoder:
            raise UserError(f"{role}.source 'audio' needs the VAE encoder but the checkpoint holds only the decoder; "
                            "use a whole-VAE checkpoint or source 'latents'")
        audio, record = audio_windows(folder, frames * vae.hop, mine.count, vae.sampling_rate)
        latents = encode(audio)
        record["encoder"] = "the VAE encoder's posterior mean"
    manifest.update(record)
    return latents, manifest


def roundtrip_frames(seconds: float, hop: int, sr: int) -> int:
    return max(1, math.floor(seconds * sr / hop))
