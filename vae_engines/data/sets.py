"""The `calibrate` and `holdout` stages: a latent set from the folder params name, encoded
by the model's encoder on the compute device, written with its manifest. The held-out set
also carries audio clips and their encodings for the wav round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core import device as devices
from vae_engines.core.params import HoldoutParams, LatentSetParams, ModelParams
from vae_engines.data.latentset import write_latent_set
from vae_engines.data.sources import OtherSet, choose_files, collect_set, roundtrip_clips, roundtrip_frames
from vae_engines.model.oobleck import encode_audio, load_vae


def make_set(role: str, mine: LatentSetParams, other: OtherSet, *, frames: int, model: ModelParams, device: Any,
             out_dir: str | Path) -> Path:
    """Write the `role` ('calibration' or 'holdout') latent set to `out_dir`: windows of
    `frames` frames from `mine`, kept apart from `other`, encoded by `model` on `device`."""
    loaded = load_vae(model)

    def encode(audio: np.ndarray) -> np.ndarray:
        return encode_audio(loaded.vae, audio, device)

    latents, manifest = collect_set(role, mine, other, frames, loaded, encode)
    manifest["compute"] = devices.describe(device)
    extra = {}
    if isinstance(mine, HoldoutParams):
        manifest["roundtrip"] = None
        if mine.source == "audio" and mine.roundtrip_clips:
            clip_frames = roundtrip_frames(mine.roundtrip_seconds, loaded.hop, loaded.sampling_rate)
            audio, record = roundtrip_clips(choose_files(role, mine, other), mine.roundtrip_clips, clip_frames,
                                            loaded.hop, loaded.sampling_rate)
            extra = {"audio": audio, "audio_latents": encode(audio)}
            manifest["roundtrip"] = {**record, "frames": clip_frames, "sampling_rate": loaded.sampling_rate}
    return write_latent_set(out_dir, latents, manifest, extra)
