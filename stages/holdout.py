"""DVC stage `holdout`: held-out latents (another seed than calibration) and audio clips
with their encoder latents, for the wav round-trip."""

import numpy as np

from vae_engines.core import params as config

from vae_engines.core import entry
from vae_engines.data.audio import music_clips
from vae_engines.core.errors import UserError
from vae_engines.data.latents import collect_latents, encode_audio, write_latent_set
from vae_engines.model.oobleck import load_vae


def main(args):
    params = config.load(args.params)
    holdout = params.holdout
    if holdout.source == params.calibration.source and holdout.seed == params.calibration.seed \
            and holdout.path == params.calibration.path:
        raise UserError("holdout uses the same source and seed as calibration; give holdout.seed another value")
    loaded = load_vae(params.model)
    latents, manifest = collect_latents(holdout, holdout.window(params.profile), loaded)
    extra = {}
    if holdout.audio_clips:
        if not loaded.has_encoder:
            raise UserError("the wav round-trip needs the VAE encoder but the checkpoint is decoder-only; set "
                            "holdout.audio_clips: 0")
        frames = max(1, round(holdout.audio_seconds * loaded.sampling_rate / loaded.hop))
        audio = music_clips(holdout.audio_clips, frames * loaded.hop / loaded.sampling_rate, loaded.sampling_rate,
                            seed=holdout.seed + 7919)
        extra = {"audio": audio.astype(np.float32), "audio_latents": encode_audio(loaded.vae, audio)}
        manifest["roundtrip"] = {"clips": holdout.audio_clips, "frames": frames, "corpus_seed": holdout.seed + 7919,
                                 "sampling_rate": loaded.sampling_rate}
    write_latent_set(args.out, latents, manifest, extra)


if __name__ == "__main__":
    p = entry.parser(__doc__)
    p.add_argument("--out", required=True, help="output directory")
    entry.run(main, p)
