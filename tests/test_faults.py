"""Faults and determinism: a stage killed mid-write leaves the previous good artifact and
the next run cleans up after it; two runs of the same params give identical bytes."""

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


from conftest import ROOT, run_stage


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_export_keeps_previous_onnx_and_recovers(project, sig):
    out = project / "engines" / "onnx"
    previous = digest(out / "fp32.onnx")
    (out / "fp32.onnx").write_bytes((out / "fp32.onnx").read_bytes())  # the previous good artifact
    proc = subprocess.Popen([sys.executable, str(ROOT / "stages" / "export.py"), "--fp32", "engines/onnx/fp32.onnx",
                             "--fp16", "engines/onnx/fp16.onnx"], cwd=project, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob(".tmp-fp32.onnx.*")):  # wait until it is writing
        assert proc.poll() is None and time.time() < deadline, "export never started writing"
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert digest(out / "fp32.onnx") == previous  # untouched
    assert not (out / "fp16.onnx").exists()
    leftovers = list(out.glob(".tmp-*"))
    if sig == signal.SIGTERM:
        assert not leftovers  # SIGTERM unwinds and removes its temporary
    result = run_stage(project, "export", "--fp32", "engines/onnx/fp32.onnx", "--fp16", "engines/onnx/fp16.onnx")
    assert result.returncode == 0, result.stderr
    assert not list(out.glob(".tmp-*"))  # the next run sweeps what a SIGKILL left
    assert (out / "fp16.onnx").stat().st_size > 0


def test_same_params_give_identical_bytes(project):
    """Calibration latents, manifest, ranges JSON, Q/DQ ONNX and CPU metrics, run twice."""
    params = {"calibration": {"source": "audio", "count": 2}, "holdout": {"count": 2, "audio_clips": 1,
                                                                            "audio_seconds": 0.2}}
    runs = []
    for i in range(2):
        cal, qdq = f"data/cal{i}", f"engines/onnx/m{i}"
        assert run_stage(project, "calibrate", "--out", cal, params=params).returncode == 0
        r = run_stage(project, "quantize", "--variant", "m", "--onnx", "engines/onnx/fp32.onnx", "--calibration", cal,
                      "--out", f"{qdq}.onnx", "--ranges", f"{qdq}.ranges.json")
        assert r.returncode == 0, r.stderr
        runs.append([digest(project / cal / "latents.npy"), digest(project / cal / "manifest.json"),
                     digest(project / f"{qdq}.ranges.json"), digest(project / f"{qdq}.onnx")])
    assert runs[0] == runs[1]
    from vae_engines.measure.metrics import all_metrics
    from vae_engines.measure.runtimes import OrtRuntime

    x = np.load(project / "data/cal0/latents.npy")
    ref = OrtRuntime(project / "engines/onnx/fp32.onnx").decode(x)
    once = [all_metrics(ref, OrtRuntime(project / f"engines/onnx/m{i}.onnx").decode(x)) for i in range(2)]
    assert once[0] == once[1]
