"""Faults at the library level: a stage killed mid-write leaves the previous good artifact
and the next run cleans up after it. (The same at the DVC level: tests/test_pipeline.py.)"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_stage


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The export of the test model takes well under a second, too short to hit by polling. The
# stage runs under a wrapper whose os.replace stops for good just before the fp32 ONNX would
# be renamed into place, when the temporary is fully written: the signal lands there.
_HOLD_BEFORE_RENAME = """
import os, runpy, sys, time
from pathlib import Path
real_replace = os.replace
def held_replace(src, dst, *args, **kwargs):
    if Path(dst).name == "fp32.onnx":
        Path(os.environ["HOLD_MARKER"]).touch()
        while True:
            time.sleep(1)
    return real_replace(src, dst, *args, **kwargs)
os.replace = held_replace
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_export_keeps_previous_onnx_and_recovers(project, sig, tmp_path):
    out = project / "engines" / "onnx"
    previous = digest(out / "fp32.onnx")
    marker = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_BEFORE_RENAME, str(ROOT / "stages" / "export.py"),
                             "--fp32", "engines/onnx/fp32.onnx", "--fp16", "engines/onnx/fp16.onnx",
                             "--decoder", "engines/decoder.safetensors"],
                            cwd=project, stderr=subprocess.PIPE, text=True, env={**os.environ, "HOLD_MARKER": str(marker)})
    deadline = time.time() + 120
    while not marker.exists():  # wait until the temporary is written and the rename is due
        assert proc.poll() is None and time.time() < deadline, f"export never reached the rename: {proc.stderr.read() if proc.poll() is not None else 'timeout'}"
        time.sleep(0.01)
    assert list(out.glob(".tmp-fp32.onnx.*"))
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert digest(out / "fp32.onnx") == previous  # untouched
    assert not (out / "fp16.onnx").exists()
    if sig == signal.SIGTERM:
        assert not list(out.glob(".tmp-*"))  # SIGTERM unwinds and removes its temporary
    result = run_stage(project, "export", "--fp32", "engines/onnx/fp32.onnx", "--fp16", "engines/onnx/fp16.onnx",
                       "--decoder", "engines/decoder.safetensors")
    assert result.returncode == 0, result.stderr
    assert not list(out.glob(".tmp-*"))  # the next run sweeps what a SIGKILL left
    assert (out / "fp16.onnx").stat().st_size > 0


def test_a_write_sweeps_its_own_stale_temporary_not_a_neighbours(tmp_path):
    """Stages side by side write files of one folder at once (engines/torch_int8/ on the lent
    H100 with `vae-engines repro --jobs 8`): a write removes what a killed write of the same
    file left, never another file's temporary still being written."""
    from vae_engines.core.fileio import atomic_path, write_bytes

    with atomic_path(tmp_path / "b.pt2") as neighbour:  # b is being written
        neighbour.write_bytes(b"half")
        stale = tmp_path / ".tmp-a.pt2.k1ll3d00"  # what a SIGKILL during a's last write left
        stale.write_bytes(b"stale")
        write_bytes(tmp_path / "a.pt2", b"a")
        assert not stale.exists() and neighbour.exists()
        neighbour.write_bytes(b"whole")
    assert (tmp_path / "b.pt2").read_bytes() == b"whole" and (tmp_path / "a.pt2").read_bytes() == b"a"
    assert not list(tmp_path.glob(".tmp-*"))
