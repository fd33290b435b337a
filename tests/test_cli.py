"""The `vae-engines` helpers, and the help text of every command and stage script."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from vae_engines.cli import compare_quality


def test_compare_quality_flags_drops_and_missing_metrics():
    base = {"heldout": {"vs_fp32": {"peak_psnr_db": 40.0, "si_sdr_db": 30.0, "max_abs_error": 0.1}}}
    same = {"heldout": {"vs_fp32": {"peak_psnr_db": 39.8, "si_sdr_db": 31.0, "max_abs_error": 0.5}}}
    worse = {"heldout": {"vs_fp32": {"peak_psnr_db": 38.0, "si_sdr_db": 30.0, "max_abs_error": 0.1}}}
    missing = {"heldout": {"vs_fp32": {"si_sdr_db": 30.0, "max_abs_error": 0.1}}}
    assert compare_quality(same, base, 0.5) == []
    assert compare_quality(worse, base, 0.5) == ["heldout.vs_fp32.peak_psnr_db: 38.00 dB, committed 40.00 dB"]
    assert compare_quality(missing, base, 0.5) == ["heldout.vs_fp32.peak_psnr_db: missing (committed 40.00)"]
    encoder_bound = {"roundtrip": {"vs_audio": {"si_sdr_db": -60.0}}}
    assert compare_quality({"roundtrip": {"vs_audio": {"si_sdr_db": -70.0}}}, encoder_bound, 0.5) == []


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "vae_engines.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def metrics_repo(tmp_path, isolated_env):
    """A git repository with params.yaml and one committed quality.json per variant."""
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"int8": {"m": {"calibrator": "minmax"}}}))
    for variant in ("fp16", "m"):
        folder = tmp_path / "reports" / "variants" / variant
        folder.mkdir(parents=True)
        (folder / "quality.json").write_text(json.dumps({"heldout": {"vs_fp32": {"peak_psnr_db": 40.0}}}))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "m"]):
        subprocess.run(cmd, cwd=tmp_path, env=isolated_env, check=True)
    return tmp_path


def test_check_metrics_passes_and_fails_for_real(metrics_repo):
    assert cli("check-metrics", "--baseline", "HEAD", cwd=metrics_repo).returncode == 0
    (metrics_repo / "reports/variants/m/quality.json").write_text(
        json.dumps({"heldout": {"vs_fp32": {"peak_psnr_db": 38.0}}}))
    out = cli("check-metrics", "--baseline", "HEAD", cwd=metrics_repo)
    assert out.returncode == 1 and "38.00 dB, committed 40.00 dB" in out.stderr


@pytest.mark.parametrize("args, words", [
    (["--baseline", "nosuchrev"], "is not a commit of this repository"),
    (["--tolerance-db", "-1"], "must be a finite number >= 0"),
    (["--tolerance-db", "nan"], "must be a finite number >= 0"),
])
def test_check_metrics_refuses_a_vacuous_gate(metrics_repo, args, words):
    out = cli("check-metrics", *args, cwd=metrics_repo)
    assert out.returncode == 1 and words in out.stderr and "Traceback" not in out.stderr


def test_check_metrics_fails_on_a_missing_report(metrics_repo):
    (metrics_repo / "reports/variants/m/quality.json").unlink()
    out = cli("check-metrics", cwd=metrics_repo)
    assert out.returncode == 1 and "quality.json is missing" in out.stderr


def test_check_params_command():
    out = cli("check-params", str(ROOT / "params.yaml"))
    assert out.returncode == 0 and "fp16, entropy" in out.stdout


def test_every_argument_has_help():
    """Every option of the CLI and of every stage script explains itself in --help."""
    import argparse
    import runpy
    from unittest import mock

    from vae_engines import cli as cli_module

    parsers = []

    def capture(self, *args, **kwargs):
        parsers.append(self)
        raise SystemExit(0)

    scripts = sorted((ROOT / "stages").glob("*.py"))
    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        for script in scripts:
            with pytest.raises(SystemExit):
                runpy.run_path(str(script), run_name="__main__")
        with pytest.raises(SystemExit):
            cli_module.main([])
    assert len(parsers) == len(scripts) + 1
    subcommands = [a for a in parsers[-1]._actions if isinstance(a, argparse._SubParsersAction)][0].choices
    for parser in parsers + list(subcommands.values()):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"
