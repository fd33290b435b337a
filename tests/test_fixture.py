"""The shipped fixture: it loads, and its spectral reconstruction of held-out generated
audio beats the same architecture with random weights by a clear margin."""

from types import SimpleNamespace

import numpy as np
import torch

from conftest import ROOT
from vae_engines.core.params import ModelParams
from vae_engines.data.corpus import music_clips
from vae_engines import metrics
from vae_engines.model.oobleck import FIXTURE_DIR, load_vae

HELDOUT_SEED = 10_000  # the training script's held-out seed; training batches never use it


def roundtrip_log_spectral(vae, clips):
    with torch.no_grad():
        x = torch.from_numpy(clips)
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.numpy()
    return metrics.mr_stft(clips, y[..., : clips.shape[-1]])["mr_stft_logmag"]


def test_fixture_beats_random_weights():
    clips = music_clips(2, 1.0, 48000, seed=HELDOUT_SEED)
    trained = load_vae(SimpleNamespace(source="checkpoint", checkpoint=str(FIXTURE_DIR), seed=0))
    random = load_vae(SimpleNamespace(source="seeded", checkpoint=str(FIXTURE_DIR), seed=0))
    assert "trained fixture" in trained.description and trained.has_encoder
    d_trained, d_random = roundtrip_log_spectral(trained.vae, clips), roundtrip_log_spectral(random.vae, clips)
    assert d_trained < 0.5 * d_random, (d_trained, d_random)


def test_fixture_is_small_enough_to_commit():
    total = sum(p.stat().st_size for p in FIXTURE_DIR.glob("*.safetensors"))
    assert total <= 24 * 2**20
    assert (FIXTURE_DIR / "MODEL_CARD.md").is_file() and (FIXTURE_DIR / "loss.png").is_file()


def test_default_params_use_the_fixture():
    assert (ROOT / ModelParams().checkpoint).resolve() == FIXTURE_DIR.resolve()
    np.testing.assert_equal(ModelParams().source, "checkpoint")
