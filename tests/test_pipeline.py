"""The DVC pipeline end to end in a scratch git repo: outputs, no-op, and that changing one
variant re-runs only that variant's stages. Needs TensorRT-RTX for the build stages."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                                                   reason="TensorRT-RTX not installed (build stages need it)")]
BIN = Path(sys.executable).parent


def small_params(checkpoint: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"] = {"source": "checkpoint", "checkpoint": str(checkpoint)}
    params["profile"].update(min_frames=2, opt_frames=4, max_frames=8)
    params["calibration"].update(count=3)
    params["holdout"].update(count=2, audio_clips=1, audio_seconds=0.2)
    params["int8"] = {"entropy": {"calibrator": "entropy", "num_bins": 512}, "minmax": {"calibrator": "minmax"}}
    params["evaluate"]["clip_seconds"] = 0.1
    params["bench"].update(frames=[2, 4], repeats=1, warmup=0, stream_frames=8, stream_window=4, stream_overlap=1,
                           runtimes=["onnxruntime", "tensorrt"])
    return params


def make_project(tmp_path: Path, checkpoint: Path, env: dict) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for item in ("dvc.yaml", "stages", "vae_engines", ".dvcignore"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, project / item)
    (project / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", project / ".dvc" / "config")
    (project / "params.yaml").write_text(yaml.safe_dump(small_params(checkpoint), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=project, env=env, check=True)
    return project


def repro(project: Path, env: dict) -> set[str]:
    env = {**env, "PATH": f"{BIN}:{env.get('PATH', '')}"}
    result = subprocess.run([str(BIN / "dvc"), "repro"], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


def edit_params(project: Path, change) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_noop_and_only_changed_variant_reruns(tmp_path, tiny_checkpoint, isolated_env):
    project = make_project(tmp_path, tiny_checkpoint, isolated_env)
    ran = repro(project, isolated_env)
    variants = ["fp16", "entropy", "minmax"]
    assert {"env", "calibrate", "holdout", "export", "reference", "report", "build_fp16",
            "quantize@entropy", "build@minmax", "evaluate@minmax", "bench@entropy"} <= ran
    for v in variants:
        plan = project / "engines" / "tensorrt_rtx" / f"{v}.plan"
        assert plan.stat().st_size > 0 and plan.with_suffix(".json").is_file()
        quality = yaml.safe_load((project / "reports" / "variants" / v / "quality.json").read_text())
        assert quality["heldout"]["vs_fp32"]["peak_psnr_db"] > 20
        assert quality["tensorrt"].startswith(("measured", "not measured"))
        assert (project / "reports" / "variants" / v / "clips" / "difference_x10.wav").is_file()
    assert (project / "engines" / "onnx" / "minmax.ranges.json").is_file()
    report = (project / "reports" / "report.md").read_text()
    assert "Decision guide" in report and "not measured" in report and "entropy" in report
    assert (project / "reports" / "plots" / "latency.png").is_file()

    # nothing changed: only the always-changed environment fingerprint runs, nothing after it
    assert repro(project, isolated_env) == {"env"}

    # one INT8 variant changes: its own stages and the report, nothing else
    edit_params(project, lambda p: p["int8"]["minmax"].update(calibrator="percentile", percentile=99.9))
    assert repro(project, isolated_env) == {"env", "quantize@minmax", "build@minmax", "evaluate@minmax",
                                            "bench@minmax", "report"}

    # a benchmark param: only the benchmarks and the report
    edit_params(project, lambda p: p["bench"].update(repeats=2))
    assert repro(project, isolated_env) == {"env", "bench_fp16", "bench@entropy", "bench@minmax", "report"}
    assert not list(project.rglob(".tmp-*"))
