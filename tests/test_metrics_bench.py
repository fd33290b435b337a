import numpy as np
import pytest

from vae_engines.measure import bench

from vae_engines.measure import metrics


def test_peak_psnr_matches_the_reference_definition():
    ref = np.zeros((1, 2, 1000))
    ref[0, 0, 0] = 2.0
    out = ref + 0.01
    assert metrics.peak_psnr(ref, out) == pytest.approx(20 * np.log10(2.0 / 0.01))


def test_si_sdr_is_scale_invariant_and_metrics_rank_noise():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 2, 48000))
    assert metrics.si_sdr(ref, 0.5 * ref) > 100
    small, large = ref + 0.01 * rng.standard_normal(ref.shape), ref + 0.1 * rng.standard_normal(ref.shape)
    for name in ("peak_psnr_db", "snr_db", "si_sdr_db"):
        assert metrics.all_metrics(ref, small)[name] > metrics.all_metrics(ref, large)[name] + 15
    assert metrics.stft_distance(ref, small) < metrics.stft_distance(ref, large)
    assert metrics.max_abs_error(ref, ref) == 0.0


def test_stream_windows_cover_the_latent():
    windows = bench.stream_windows(64, 16, 4)
    assert windows[0] == (0, 16) and windows[-1][1] == 64
    assert all(b - a == 16 for a, b in windows)
    assert all(windows[i + 1][0] - windows[i][0] <= 12 for i in range(len(windows) - 1))


def test_ratios_come_from_the_same_points():
    lat = {"v": {"b1_f8": {"median_ms": 50.0}}, "fp32": {"b1_f8": {"median_ms": 100.0}, "b1_f16": {"median_ms": 1}}}
    assert bench.ratios(lat, "v", "fp32") == {"b1_f8": 2.0}
