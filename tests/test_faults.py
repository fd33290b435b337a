"""Faults at the library level: a stage killed mid-write leaves the previous good artifact
and the next run cleans up after it. (The same at the DVC level: tests/test_pipeline.py.)"""

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_stage


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_export_keeps_previous_onnx_and_recovers(project, sig):
    out = project / "engines" / "onnx"
    previous = digest(out / "fp32.onnx")
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
    if sig == signal.SIGTERM:
        assert not list(out.glob(".tmp-*"))  # SIGTERM unwinds and removes its temporary
    result = run_stage(project, "export", "--fp32", "engines/onnx/fp32.onnx", "--fp16", "engines/onnx/fp16.onnx")
    assert result.returncode == 0, result.stderr
    assert not list(out.glob(".tmp-*"))  # the next run sweeps what a SIGKILL left
    assert (out / "fp16.onnx").stat().st_size > 0
