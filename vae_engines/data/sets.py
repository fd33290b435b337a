"""The `calibrate` and `holdout` stages: a latent set from the folder params name, encoded
by the model's encoder on the compute device, written with its manifest. The held-out set
also carries audio clips and their encodings for the wav round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.data.latentset import write_latent_set
from vae_engines.data.sources import choose_files, collect_set, roundtrip_clips, roundtrip_frames


def make_set(role: str, params: Any, out_dir: str | Path) -> Path:
    """Write the `role` ('calibration' or 'holdout') latent set of `params` to `out_dir`."""
    from vae_engines.core import device as devices
    from vae_engines.model.oobleck import encode_audio, load_vae

    mine, other = (params.calibration, params.holdout) if role == "calibration" else (params.holdout,
                                                                                        params.calibration)
    loaded = load_vae(params.model)
    device = devices.resolve(params.compute.device, params.compute.threads)

    def encode(audio: np.ndarray) -> np.ndarray:
        return encode_audio(loaded.vae, audio, device)

    latents, manifest = collect_set(role, mine, other, mine.window(params.profile), loaded, encode)
    manifest["compute"] = devices.describe(device)
    extra = {}
    if role == "holdout" and mine.source == "audio" and mine.roundtrip_clips:
        frames = roundtrip_frames(mine.roundtrip_seconds, loaded.hop, loaded.sampling_rate)
        folder = choose_files(role, mine, other)
        audio, record = roundtrip_clips(folder, mine.roundtrip_clips, frames, loaded.hop, loaded.sampling_rate)
        extra = {"audio": audio, "audio_latents": encode(audio)}
        manifest["roundtrip"] = {**record, "frames": frames, "sampling_rate": loaded.sampling_rate}
    elif role == "holdout":
        manifest["roundtrip"] = None
    return write_latent_set(out_dir, latents, manifest, extra)
