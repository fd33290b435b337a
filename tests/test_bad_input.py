"""Bad input through the stage entry points: exit 1, one line on stderr naming the problem
and the fix, no traceback, and nothing new or changed under data/, engines/ or reports/."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY, make_vae, run_stage, save_diffusers_folder, snapshot


def write_latents(folder: Path, **arrays) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    return str(folder)


def put(folder: Path, name: str | None = None, data: bytes = b"") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    if name:
        (folder / name).write_bytes(data)
    return str(folder)


def other_architecture(root: Path) -> str:
    """A diffusers folder whose config.json does not match its weights."""
    folder = save_diffusers_folder(make_vae({**TINY, "decoder_channels": 16}), root / "other")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "decoder_channels": 8}))
    return str(folder)


def truncated_plan(root: Path) -> None:
    plans = root / "engines" / "tensorrt_rtx"
    plans.mkdir(parents=True)
    (plans / "fp16.plan").write_bytes(b"\0" * 100)
    (plans / "fp16.json").write_text('{"plan_bytes": 4096, "plan_sha256": "0"}')


def zero_length_wav(folder: Path) -> str:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "silence.wav", np.zeros((0, 2), np.float32), 48000)
    return str(folder)


EVALUATE = ["--variant", "fp16", "--onnx", "engines/onnx/fp32.onnx", "--plan", "engines/tensorrt_rtx/fp16.plan",
            "--holdout", "data/eval", "--reference", "data/reference", "--env", "reports/env.json", "--out",
            "reports/variants/fp16"]


def good(frames=8):
    return np.random.default_rng(0).standard_normal((1, 64, frames)).astype(np.float32)


CASES = {
    "params typo": (lambda p: {"calibraton": {}}, "calibrate", ["--out", "data/calibration"], "unknown key"),
    "unknown calibrator": (lambda p: {"int8": {"m": {"calibrator": "kl"}}}, "quantize",
                           ["--variant", "m", "--onnx", "engines/onnx/fp32.onnx", "--calibration", "data/calibration",
                            "--out", "engines/onnx/m.onnx", "--ranges", "engines/onnx/m.ranges.json"], "calibrator"),
    "zero frames": (lambda p: {"calibration": {"frames": 0}}, "calibrate", ["--out", "data/calibration"], "frames"),
    "profile order": (lambda p: {"profile": {"min_frames": 9, "opt_frames": 4, "max_frames": 8}}, "calibrate",
                      ["--out", "data/calibration"], "min <= opt <= max"),
    "percentile out of range": (lambda p: {"int8": {"m": {"calibrator": "percentile", "percentile": 120}}},
                                "calibrate", ["--out", "data/calibration"], "(0, 100]"),
    "bad variant name": (lambda p: {"int8": {"my variant": {"calibrator": "minmax"}}}, "calibrate",
                         ["--out", "data/calibration"], "not usable"),
    "too many kept layers": (lambda p: {"int8": {"m": {"calibrator": "minmax", "keep_first": 30,
                                                       "keep_last": 30}}}, "quantize",
                             ["--variant", "m", "--onnx", "engines/onnx/fp32.onnx", "--calibration",
                              "data/calibration", "--out", "engines/onnx/m.onnx", "--ranges",
                              "engines/onnx/m.ranges.json"], "only 37 convolution layers"),
    "missing checkpoint": (lambda p: {"model": {"source": "checkpoint", "checkpoint": str(p / "nope")}},
                           "export", ["--fp32", "engines/onnx/fp32.onnx", "--fp16", "engines/onnx/fp16.onnx"],
                           "does not exist"),
    "latents wrong rank": (lambda p: {"calibration": {"source": "latents", "path": write_latents(
        p / "in", a=np.zeros((2, 3, 64, 8), np.float32))}}, "calibrate", ["--out", "data/calibration"], "shape"),
    "latents wrong channels": (lambda p: {"calibration": {"source": "latents", "path": write_latents(
        p / "in", a=np.zeros((1, 32, 8), np.float32))}}, "calibrate", ["--out", "data/calibration"], "32 channels"),
    "latents wrong dtype": (lambda p: {"calibration": {"source": "latents", "path": write_latents(
        p / "in", a=np.zeros((1, 64, 8), np.int32))}}, "calibrate", ["--out", "data/calibration"], "dtype"),
    "latents with nan": (lambda p: {"calibration": {"source": "latents", "path": write_latents(
        p / "in", a=np.where(good() > 1, np.nan, good()))}}, "calibrate", ["--out", "data/calibration"], "NaN"),
    "empty latent folder": (lambda p: {"calibration": {"source": "latents", "path": put(p / "in")}},
                            "calibrate", ["--out", "data/calibration"], "has no latent"),
    "truncated npy": (lambda p: {"calibration": {"source": "latents", "path": put(
        p / "in", "t.npy", b"\x93NUMPY\x01\x00v\x00{'descr'")}}, "calibrate", ["--out", "data/calibration"],
        "not a readable latent file"),
    "empty audio file": (lambda p: {"calibration": {"source": "audio", "path": put(p / "in", "a.wav")}},
                         "calibrate", ["--out", "data/calibration"], "not a readable audio file"),
    "zero-length audio clip": (lambda p: {"calibration": {"source": "audio", "path": zero_length_wav(p / "in")}},
                               "calibrate", ["--out", "data/calibration"], "has no samples"),
    "zero-length latent": (lambda p: {"calibration": {"source": "latents", "path": write_latents(
        p / "in", a=np.zeros((1, 64, 0), np.float32))}}, "calibrate", ["--out", "data/calibration"], "zero frames"),
    "checkpoint of another architecture": (lambda p: {"model": {"source": "checkpoint",
                                                                 "checkpoint": other_architecture(p)}},
                                           "export", ["--fp32", "engines/onnx/fp32.onnx", "--fp16",
                                                      "engines/onnx/fp16.onnx"], "does not match the model"),
    "backend not installed": (lambda p: {"build": {"backend": "tensorrt"}}, "build",
                              ["--onnx", "engines/onnx/fp32.onnx", "--plan", "engines/tensorrt/fp16.plan",
                               "--timing-cache", "engines/tensorrt/fp16.timing.cache"], "build.backend is 'tensorrt'"),
    "truncated plan": (lambda p: truncated_plan(p), "evaluate", EVALUATE, "truncated"),
    "corrupted onnx": (lambda p: (p / "engines/onnx/fp32.onnx").write_bytes(b"\x00junk") and None, "quantize",
                       ["--variant", "m", "--onnx", "engines/onnx/fp32.onnx", "--calibration", "data/calibration",
                        "--out", "engines/onnx/m.onnx", "--ranges", "engines/onnx/m.ranges.json"],
                       "not a readable ONNX"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(project, case):
    make_params, stage, args, words = CASES[case]
    change = make_params(project)
    before = snapshot(project)
    result = run_stage(project, stage, *args, params=change or {})
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert words in lines[0]
    assert "Traceback" not in result.stderr
    assert snapshot(project) == before


def test_debug_flag_shows_the_traceback(project):
    result = run_stage(project, "calibrate", "--out", "data/calibration", "--debug", params={"calibraton": {}})
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_failed_write_is_a_clear_error(project):
    """A write that cannot happen (here the output's parent is a file, which fails for root
    too, unlike a read-only folder) is one clear line and leaves no partial file."""
    (project / "data" / "blocker").write_text("a file where a folder should be")
    before = snapshot(project)
    result = run_stage(project, "calibrate", "--out", "data/blocker/set", params={})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write data/blocker/set" in result.stderr
    assert snapshot(project) == before


def test_mono_and_44k_audio_are_converted_and_recorded(project):
    import soundfile as sf

    folder = project / "in"
    folder.mkdir()
    sr = 44100
    t = np.arange(int(0.5 * sr)) / sr
    sf.write(folder / "mono.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    sf.write(folder / "short.wav", np.zeros((100, 2), np.float32), 48000)
    result = run_stage(project, "calibrate", "--out", "data/calibration",
                       params={"calibration": {"source": "audio", "path": str(folder), "count": 2}})
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load((project / "data/calibration/manifest.json").read_text())
    notes = {Path(f["file"]).name: f["notes"] for f in manifest["files"]}
    assert "mono duplicated to stereo" in notes["mono.wav"]
    assert "resampled 44100 -> 48000 Hz" in notes["mono.wav"]
    assert any("skipped" in n for n in notes["short.wav"])
    assert "skipping" in result.stderr  # the short clip is a warning, not an error
    assert np.load(project / "data/calibration/latents.npy").shape == (2, 64, 4)
