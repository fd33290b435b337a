"""The shipped fixture: it loads, and its spectral reconstruction of held-out generated
audio beats the same architecture with random weights by a clear margin."""

import numpy as np
import torch

from vae_engines.core import params as config

from vae_engines.measure import metrics
from vae_engines.data.audio import music_clips
from vae_engines.model.oobleck import FIXTURE_DIR, load_vae

HELDOUT_SEED = 10_000  # the training script's held-out seed; training batches never use it


def roundtrip_stft(vae, clips):
    with torch.no_grad():
        x = torch.from_numpy(clips)
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.numpy()
    return metrics.stft_distance(clips, y[..., : clips.shape[-1]])


def test_fixture_beats_random_weights():
    clips = music_clips(2, 1.0, 48000, seed=HELDOUT_SEED)
    trained = load_vae(config.ModelParams(source="fixture"))
    random = load_vae(config.ModelParams(source="seeded", architecture="acestep-1.5-small"))
    assert "trained fixture" in trained.description and trained.has_encoder
    d_trained, d_random = roundtrip_stft(trained.vae, clips), roundtrip_stft(random.vae, clips)
    # measured at training time on 8 clips: 0.151 vs 0.777; require at least a halving here
    assert d_trained < 0.5 * d_random, (d_trained, d_random)


def test_fixture_is_small_enough_to_commit():
    total = sum(p.stat().st_size for p in FIXTURE_DIR.glob("*.safetensors"))
    assert total <= 24 * 2**20
    assert (FIXTURE_DIR / "MODEL_CARD.md").is_file() and (FIXTURE_DIR / "loss.png").is_file()


def test_default_params_use_the_fixture():
    assert config.ModelParams().source == "fixture"
    np.testing.assert_equal(config.Params().model.source, "fixture")
