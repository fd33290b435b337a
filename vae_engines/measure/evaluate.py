"""Quality of one variant against the fp32 and fp16 references, on held-out latents and
on a wav round-trip (audio -> encoder -> decoder), reported separately: the round-trip
includes the encoder's error, which hides decoder differences."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.data.audio import write_wav
from vae_engines.core.fileio import atomic_path, write_json
from vae_engines.data.latents import read_latent_set
from vae_engines.measure.metrics import all_metrics
from vae_engines.measure.runtimes import check_finite

log = logging.getLogger(__name__)


def decode_all(runtime: Any, latents: np.ndarray, variant: str) -> np.ndarray:
    """Decode latents [N, C, T] one call each; NaN / Inf is an error naming the variant."""
    return np.concatenate([check_finite(runtime.decode(x[None]), variant, runtime.name) for x in latents])


def reference_outputs(fp32: Any, fp16: Any, holdout_dir: str | Path, out_dir: str | Path) -> None:
    """Decode the held-out and round-trip latents with the fp32 and fp16 models once, for
    every variant's evaluation to compare against."""
    held = read_latent_set(holdout_dir)
    arrays = {"heldout_fp32": decode_all(fp32, held, "fp32"), "heldout_fp16": decode_all(fp16, held, "fp16")}
    if (Path(holdout_dir) / "audio_latents.npy").is_file():
        rt = read_latent_set(holdout_dir, "audio_latents")
        arrays["roundtrip_fp32"] = decode_all(fp32, rt, "fp32")
        arrays["roundtrip_fp16"] = decode_all(fp16, rt, "fp16")
    with atomic_path(out_dir, is_dir=True) as tmp:
        for name, arr in arrays.items():
            np.save(Path(tmp) / f"{name}.npy", arr)
        write_json(Path(tmp) / "runtimes.json", {"fp32": fp32.describe(), "fp16": fp16.describe()})


def evaluate_variant(variant: str, runtime: Any, holdout_dir: str | Path, reference_dir: str | Path,
                     clips_dir: str | Path, sr: int, clip_seconds: float) -> dict:
    """Metrics of `runtime`'s outputs against the references; writes wav clips to listen to."""
    ref = Path(reference_dir)
    held = read_latent_set(holdout_dir)
    out = decode_all(runtime, held, variant)
    result: dict = {"heldout": {"vs_fp32": all_metrics(np.load(ref / "heldout_fp32.npy"), out)}}
    if variant != "fp16":
        result["heldout"]["vs_fp16"] = all_metrics(np.load(ref / "heldout_fp16.npy"), out)
    clip_ref, clip_out = np.load(ref / "heldout_fp32.npy")[0], out[0]
    if (ref / "roundtrip_fp32.npy").is_file():
        audio = read_latent_set(holdout_dir, "audio")
        rt = decode_all(runtime, read_latent_set(holdout_dir, "audio_latents"), variant)
        n = min(audio.shape[-1], rt.shape[-1])
        result["roundtrip"] = {"vs_audio": all_metrics(audio[..., :n], rt[..., :n]),
                               "vs_fp32": all_metrics(np.load(ref / "roundtrip_fp32.npy"), rt)}
        clip_ref, clip_out = np.load(ref / "roundtrip_fp32.npy")[0], rt[0]
    samples = int(clip_seconds * sr)
    clip_ref, clip_out = clip_ref[:, :samples], clip_out[:, :samples]
    with atomic_path(clips_dir, is_dir=True) as tmp:
        write_wav(Path(tmp) / "reference_fp32.wav", clip_ref, sr)
        write_wav(Path(tmp) / f"{variant}.wav", clip_out, sr)
        write_wav(Path(tmp) / "difference_x10.wav", 10 * (clip_out - clip_ref), sr)
    return result
