import subprocess
import sys

from conftest import ROOT
from vae_engines.cli import compare_quality


def test_compare_quality_flags_only_real_drops():
    base = {"heldout": {"vs_fp32": {"peak_psnr_db": 40.0, "si_sdr_db": 30.0, "max_abs_error": 0.1}}}
    same = {"heldout": {"vs_fp32": {"peak_psnr_db": 39.8, "si_sdr_db": 31.0, "max_abs_error": 0.5}}}
    worse = {"heldout": {"vs_fp32": {"peak_psnr_db": 38.0, "si_sdr_db": 30.0, "max_abs_error": 0.1}}}
    assert compare_quality(same, base, 0.5) == []
    assert compare_quality(worse, base, 0.5) == ["heldout.vs_fp32.peak_psnr_db: 38.00 dB, committed 40.00 dB"]


def test_check_params_command():
    out = subprocess.run([sys.executable, "-m", "vae_engines.cli", "check-params", str(ROOT / "params.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "fp16, entropy" in out.stdout
