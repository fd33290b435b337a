"""A latent set on disk: one folder, `latents.npy` ([N, C, T] float32), optional extra
arrays (the held-out audio and its encodings), and `manifest.json` saying where every
window came from (file, its sha256, start, length), what was converted, the split, and
per-channel statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path, read_json, sha256_file, write_json


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


def write_latent_set(out_dir: str | Path, latents: np.ndarray, manifest: dict,
                     extra_arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write latents.npy (+ extra arrays) and manifest.json into `out_dir`, atomically."""
    manifest = {
        **manifest,
        "count": int(latents.shape[0]),
        "shape": list(latents.shape),
        "channel_mean": latents.mean(axis=(0, 2)).round(6).tolist(),
        "channel_std": latents.std(axis=(0, 2)).round(6).tolist(),
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


def has_array(directory: str | Path, name: str) -> bool:
    return (Path(directory) / f"{name}.npy").is_file()


def read_manifest(directory: str | Path) -> dict:
    return read_json(Path(directory) / "manifest.json")


def set_digest(directory: str | Path) -> str | None:
    """sha256 of a set's latents.npy, as its manifest records it (provenance of what used it)."""
    return read_manifest(directory).get("sha256", {}).get("latents.npy")
