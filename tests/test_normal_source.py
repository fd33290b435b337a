"""The `normal` latent source: seeded unit-normal latents, the scale a generator hands the
decoder, with no folder read and held-out seeds kept apart."""

from types import SimpleNamespace

import numpy as np
import pytest

from vae_engines.core.errors import UserError
from vae_engines.core.params import Params, from_mapping
from vae_engines.data.sources import OtherSet, collect_set


def test_normal_latents_are_seeded_unit_normal(tmp_path):
    mine = SimpleNamespace(source="normal", path=str(tmp_path / "absent"), count=3, seed=7, fraction=0.25, frames=None)
    vae = SimpleNamespace(latent_channels=64, description="test", has_encoder=True)
    latents, manifest = collect_set("calibration", mine, OtherSet(str(tmp_path), "normal", 0.25), 400, vae, None)
    assert latents.shape == (3, 64, 400) and latents.dtype == np.float32
    assert abs(float(latents.std()) - 1.0) < 0.02 and abs(float(latents.mean())) < 0.02
    again, _ = collect_set("calibration", mine, OtherSet(str(tmp_path), "normal", 0.25), 400, vae, None)
    np.testing.assert_array_equal(latents, again)
    assert manifest["source"] == "normal" and manifest["seed"] == 7


def test_normal_sets_need_different_seeds():
    with pytest.raises(UserError, match="another seed"):
        from_mapping(Params, {"calibration": {"source": "normal", "seed": 0},
                              "holdout": {"source": "normal", "seed": 0}}, "")
    from_mapping(Params, {"calibration": {"source": "normal", "seed": 0}, "holdout": {"source": "normal", "seed": 1}},
                 "")


def test_a_folder_set_beside_a_normal_one_reads_every_file(tmp_path):
    from vae_engines.data.corpus import write_corpus
    from vae_engines.data.sources import choose_files

    folder = write_corpus(tmp_path / "corpus", 3, 0.2, 48000, seed=0)
    mine = SimpleNamespace(source="audio", path=str(folder), count=3, seed=1, fraction=0.25, frames=None)
    chosen = choose_files("holdout", mine, OtherSet(str(folder), "normal", 0.25))
    assert len(chosen.files) == 3 and "unit-normal" in chosen.split["rule"]
