"""Calibration and held-out data: the built-in corpus, audio files, folder sources and the
split between the two sets, and the on-disk latent-set format."""
