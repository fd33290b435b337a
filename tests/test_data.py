"""Calibration and held-out data: the corpus, the split by file, round-robin windows and
what the manifests record."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest

from vae_engines.core.errors import UserError
from vae_engines.data.corpus import write_corpus
from vae_engines.data.sources import _round_robin, choose_files, collect_set, split_by_file


def set_params(path, source="audio", count=4, seed=0, fraction=0.25):
    return SimpleNamespace(source=source, path=str(path), count=count, seed=seed, fraction=fraction, frames=None)


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_corpus_is_reproducible_files(tmp_path):
    a, b = write_corpus(tmp_path / "a", 3, 0.5, 48000, seed=4), write_corpus(tmp_path / "b", 3, 0.5, 48000, seed=4)
    assert digests(a) == digests(b)
    assert sorted(p.name for p in a.iterdir()) == ["clip_000.flac", "clip_001.flac", "clip_002.flac", "corpus.json"]
    assert digests(write_corpus(tmp_path / "c", 3, 0.5, 48000, seed=5)) != digests(a)


def test_one_folder_is_split_by_file(tmp_path):
    folder = write_corpus(tmp_path / "corpus", 12, 0.2, 48000, seed=0)
    cal = choose_files("calibration", set_params(folder), set_params(folder))
    held = choose_files("holdout", set_params(folder), set_params(folder))
    assert not set(cal.files) & set(held.files)
    assert len(held.files) == 3 and len(cal.files) == 9
    assert cal.split["holdout_files"] == held.split["holdout_files"]
    assert "by construction" in held.split["disjoint"]
    # adding a file moves at most one existing file across the split
    files = sorted(folder.glob("*.flac"))
    _, before = split_by_file(files, folder, 0.25)
    (folder / "zz_new.flac").write_bytes(files[0].read_bytes())
    _, after = split_by_file(sorted(folder.glob("*.flac")), folder, 0.25)
    assert len(set(before) - set(after)) <= 1


def test_separate_folders_may_not_share_a_file(tmp_path):
    a = write_corpus(tmp_path / "a", 2, 0.2, 48000, seed=0)
    b = write_corpus(tmp_path / "b", 2, 0.2, 48000, seed=1)
    folder = choose_files("holdout", set_params(b), set_params(a))
    assert "no identical file" in folder.split["disjoint"]
    (b / "copy.flac").write_bytes((a / "clip_001.flac").read_bytes())
    with pytest.raises(UserError, match="share 1 identical file"):
        choose_files("holdout", set_params(b), set_params(a))


def test_a_single_file_cannot_be_split(tmp_path):
    folder = write_corpus(tmp_path / "one", 1, 0.2, 48000, seed=0)
    with pytest.raises(UserError, match="cannot be split"):
        choose_files("calibration", set_params(folder), set_params(folder))


def test_windows_are_round_robin_across_files():
    assert _round_robin([10, 25, 4], 5, 5) == [(0, 0), (1, 0), (0, 5), (1, 5), (1, 10)]
    assert _round_robin([3], 5, 2) == []


def test_manifest_records_the_windows_used(tmp_path, tiny_checkpoint):
    from vae_engines.model.oobleck import encode_audio, load_checkpoint

    folder = write_corpus(tmp_path / "corpus", 8, 0.2, 48000, seed=0)
    vae = load_checkpoint(tiny_checkpoint)
    latents, manifest = collect_set("calibration", set_params(folder, count=4), set_params(folder), 4, vae,
                                    lambda audio: encode_audio(vae.vae, audio, "cpu", progress=False))
    assert latents.shape == (4, 64, 4)
    assert len(manifest["windows"]) == 4 and {"file", "sha256", "start_samples", "samples"} <= set(manifest["windows"][0])
    assert len({w["file"] for w in manifest["windows"]}) == 4  # one window from each of 4 files first
    assert "seed" not in manifest  # audio sources do not use one
    assert set(manifest["split"]["calibration_files"]).isdisjoint(manifest["split"]["holdout_files"])


def test_synthetic_latents_take_statistics_from_the_folder(tmp_path, tiny_checkpoint):
    from vae_engines.model.oobleck import load_checkpoint

    folder = tmp_path / "real"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(folder / f"{i}.npy", (rng.standard_normal((64, 50)) * 3 + 5).astype(np.float32))
    vae = load_checkpoint(tiny_checkpoint)
    latents, manifest = collect_set("calibration", set_params(folder, "synthetic", count=16, seed=3),
                                    set_params(folder, "synthetic", seed=4), 20, vae, None)
    assert abs(latents.mean() - 5) < 0.5 and abs(latents.std() - 3) < 0.5
    assert manifest["seed"] == 3 and len(manifest["statistics_from"]) == 2
