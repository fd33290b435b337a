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


def checkpoint_with_config(root: Path, config: str) -> str:
    folder = save_diffusers_folder(make_vae(), root / "ck")
    (folder / "config.json").write_text(config)
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
    for name in ("a.wav", "b.wav"):
        sf.write(folder / name, np.zeros((0, 2), np.float32), 48000)
    return str(folder)


CAL = ["--out", "data/calibration"]
QUANTIZE = ["--variant", "m", "--onnx", "engines/onnx/fp32.onnx", "--stats", "data/stats/stats.npz",
            "--calibration", "data/calibration", "--out", "engines/onnx/m.onnx", "--ranges", "engines/onnx/m.ranges.json"]
EXPORT = ["--fp32", "engines/onnx/fp32.onnx", "--fp16", "engines/onnx/fp16.onnx",
          "--decoder", "engines/decoder.safetensors"]
EVALUATE = ["--variant", "fp16", "--onnx", "engines/onnx/fp32.onnx", "--plan", "engines/tensorrt_rtx/fp16.plan",
            "--holdout", "data/holdout", "--reference", "data/reference", "--out", "reports/variants/fp16"]
CHECK = ["--toolchain", "engines/toolchain.json", "--torch", "engines/torch/target.json", "--stamp", "data/params.ok"]
COMPILE = ["--decoder", "engines/decoder.safetensors", "--precision", "fp16", "--out", "engines/torch/fp16.pt2"]


def implicit_graph(root: Path) -> None:
    """The fixture graph marked as an implicit INT8 variant (what quantize writes for one)."""
    from vae_engines.graph.io import load_onnx, save_onnx, set_metadata

    model = load_onnx(root / "engines/onnx/fp32.onnx")
    recipe = {"quantization": "implicit", "precision": "int8+fp16", "amax": {}, "kept_nodes": []}
    save_onnx(set_metadata(model, {"vae_engines.recipe": json.dumps(recipe)}), root / "engines/onnx/i.onnx")


def good(frames=8):
    return np.random.default_rng(0).standard_normal((1, 64, frames)).astype(np.float32)


def latents_source(p: Path, **arrays) -> dict:
    """Calibration from a folder of latent files (held-out data stays the audio corpus)."""
    return {"calibration": {"source": "latents", "path": write_latents(p / "in", **arrays)}}


CASES = {
    "params typo": (lambda p: {"calibraton": {}}, "calibrate", CAL, "unknown key"),
    "unknown calibrator": (lambda p: {"int8": {"m": {"calibrator": "kl"}}}, "quantize", QUANTIZE, "calibrator"),
    "zero frames": (lambda p: {"calibration": {"frames": 0}}, "calibrate", CAL, "frames"),
    "profile order": (lambda p: {"profile": {"min_frames": 9, "opt_frames": 4, "max_frames": 8}}, "calibrate", CAL,
                      "min <= opt <= max"),
    "percentile out of range": (lambda p: {"int8": {"m": {"calibrator": "percentile", "percentile": 120}}},
                                "calibrate", CAL, "(0, 100]"),
    "variant name with a space": (lambda p: {"int8": {"my variant": {"calibrator": "minmax"}}}, "check", CHECK,
                                  "'my variant' is not usable"),
    "bench frames beyond the profile": (lambda p: {"bench": {"frames": [2, 64]}}, "check", CHECK,
                                        "64 frames is outside the engines' profile 2..8"),
    "trt cache outside its folder": (lambda p: {"int8": {"m": {"calibrator": "trt_cache", "cache": "/x.cache"}}},
                                     "check", CHECK, "data/trt_caches/"),
    "missing checkpoint (check)": (lambda p: {"model": {"checkpoint": str(p / "nope")}}, "check", CHECK,
                                   "model.checkpoint"),
    "too many kept layers": (lambda p: {"int8": {"m": {"calibrator": "minmax", "keep_first": 30, "keep_last": 30}}},
                             "quantize", QUANTIZE, "only 37 convolution layers"),
    "missing checkpoint": (lambda p: {"model": {"checkpoint": str(p / "nope")}}, "export", EXPORT, "does not exist"),
    "config.json not an object": (lambda p: {"model": {"checkpoint": checkpoint_with_config(p, "[1, 2]")}},
                                  "export", EXPORT, "not a JSON object"),
    "config.json wrongly typed field": (lambda p: {"model": {"checkpoint": checkpoint_with_config(
        p, '{"decoder_channels": "eight"}')}}, "export", EXPORT, "decoder_channels is 'eight'"),
    "checkpoint of another class": (lambda p: {"model": {"checkpoint": checkpoint_with_config(
        p, '{"_class_name": "AutoencoderKL"}')}}, "export", EXPORT, "describes a AutoencoderKL, not an AutoencoderOobleck"),
    "checkpoint of another architecture": (lambda p: {"model": {"checkpoint": other_architecture(p)}}, "export",
                                           EXPORT, "does not match the architecture"),
    "latents wrong rank": (lambda p: latents_source(p, a=np.zeros((2, 3, 64, 8), np.float32)), "calibrate", CAL,
                           "shape"),
    "latents wrong channels": (lambda p: latents_source(p, a=np.zeros((1, 32, 8), np.float32)), "calibrate", CAL,
                               "32 channels"),
    "latents wrong dtype": (lambda p: latents_source(p, a=np.zeros((1, 64, 8), np.int32)), "calibrate", CAL, "dtype"),
    "latents with nan": (lambda p: latents_source(p, a=np.where(good() > 1, np.nan, good()), b=good()), "calibrate",
                         CAL, "NaN"),
    "empty latent folder": (lambda p: {"calibration": {"source": "latents", "path": put(p / "in")}}, "calibrate",
                            CAL, "has no latent"),
    "truncated npy": (lambda p: {"calibration": {"source": "latents", "path": put(
        p / "in", "t.npy", b"\x93NUMPY\x01\x00v\x00{'descr'")}}, "calibrate", CAL, "not a readable latent file"),
    "empty audio file": (lambda p: {"calibration": {"source": "audio", "path": put(p / "in", "a.wav")}}, "calibrate",
                         CAL, "not a readable audio file"),
    "zero-length audio clip": (lambda p: {"calibration": {"path": zero_length_wav(p / "in")}}, "calibrate", CAL,
                               "has no samples"),
    "calibration folder missing": (lambda p: {"calibration": {"path": str(p / "nowhere")}}, "calibrate", CAL,
                                   "calibration.path"),
    "cuda asked where PyTorch sees no GPU": (lambda p: {"compute": {"device": "cuda"}}, "calibrate", CAL,
                                       "compute.device is cuda"),
    "backend not installed": (lambda p: {"build": {"backend": "tensorrt"}}, "build",
                              ["--onnx", "engines/onnx/fp32.onnx", "--plan", "engines/tensorrt/fp16.plan",
                               "--timing-cache", "engines/tensorrt/fp16.timing.cache"], "build.backend is 'tensorrt'"),
    "truncated plan": (lambda p: truncated_plan(p), "evaluate", EVALUATE, "truncated"),
    "fp16 compiled engine on a CPU": (lambda p: {"compute": {"device": "cpu"}}, "compile", COMPILE,
                                      "fp16 needs a GPU"),
    "implicit INT8 with placement": (lambda p: {"int8": {"m": {"calibrator": "minmax", "quantization": "implicit",
                                                              "placement": "fused"}}}, "check", CHECK,
                                     "implicit INT8 has no Q/DQ to place"),
    "implicit INT8 asked of TensorRT-RTX": (lambda p: {"int8": {"m": {"calibrator": "entropy",
                                                                       "quantization": "implicit"}}},
                                            "check", CHECK, "implicit INT8 is not available with tensorrt_rtx"),
    "implicit INT8 graph on TensorRT-RTX": (lambda p: implicit_graph(p), "build",
                                      ["--onnx", "engines/onnx/i.onnx", "--plan", "engines/tensorrt_rtx/i.plan",
                                       "--timing-cache", "engines/tensorrt_rtx/i.timing.cache"],
                                      "implicit INT8 is not available with tensorrt_rtx"),
    "corrupted onnx": (lambda p: (p / "engines/onnx/fp32.onnx").write_bytes(b"\x00junk") and None, "stats",
                       ["--onnx", "engines/onnx/fp32.onnx", "--calibration", "data/calibration", "--out",
                        "data/stats/stats.npz", "--record", "data/stats/stats.json"], "not a readable ONNX"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(project, case):
    make_params, stage, args, words = CASES[case]
    change = make_params(project)
    before = snapshot(project)
    hide_gpus = {"CUDA_VISIBLE_DEVICES": ""}  # the cuda case fails the same way on a machine with a GPU
    result = run_stage(project, stage, *args, params=change or {}, env=hide_gpus)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr
    assert snapshot(project) == before


def test_debug_flag_shows_the_traceback(project):
    result = run_stage(project, "calibrate", "--out", "data/calibration", "--debug", params={"calibraton": {}})
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_failed_write_is_a_clear_error(project):
    """A write that cannot happen (here the output's parent is a file, which fails for root
    too, unlike a read-only folder) is one clear line and leaves no partial file."""
    (project / "data" / "blocker").write_text("a file where a folder should be")
    before = snapshot(project)
    result = run_stage(project, "corpus", "--out", "data/blocker/set", params={})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write data/blocker/set" in result.stderr
    assert snapshot(project) == before


def test_mono_and_44k_audio_are_converted_and_recorded(project):
    import soundfile as sf

    folder = project / "in"
    folder.mkdir()
    sr = 44100
    t = np.arange(int(0.5 * sr)) / sr
    for name in ("mono_a.wav", "mono_b.wav", "mono_c.wav"):
        sf.write(folder / name, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    sf.write(folder / "short.wav", np.zeros((100, 2), np.float32), 48000)
    result = run_stage(project, "calibrate", "--out", "data/calibration",
                       params={"calibration": {"source": "audio", "path": str(folder), "count": 2},
                               "holdout": {"path": str(folder), "fraction": 0.25}})
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load((project / "data/calibration/manifest.json").read_text())
    converted = manifest["conversions"]
    assert any("mono duplicated to stereo" in notes and "resampled 44100 -> 48000 Hz" in notes
               for notes in converted.values())
    calibration_files = set(manifest["split"]["calibration_files"])
    if "short.wav" in calibration_files:
        assert "short.wav" in manifest["skipped_short_files"]
        assert "skipping" in result.stderr  # the short clip is a warning, not an error
    assert np.load(project / "data/calibration/latents.npy").shape == (2, 64, 4)


@pytest.mark.parametrize("kind, message", [
    ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 12.00 GiB"),  # the caching allocator's
    ("AcceleratorError", "CUDA error: out of memory\nSearch for `cudaErrorMemoryAllocation'"),  # a copy to the GPU
])
def test_out_of_gpu_memory_is_one_line(capsys, kind, message):
    """Running out of GPU memory (simulated: no GPU here; both ways PyTorch 2.11 raises it, the
    second seen on the lent H100 with 8 stages side by side) is one line naming what to shrink."""
    from vae_engines.core import entry

    error = type(kind, (RuntimeError,), {})

    def main(args):
        raise error(message)

    with pytest.raises(SystemExit) as exit_info:
        entry.run(main, entry.parser("test"), [])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert f"out of GPU memory ({message.splitlines()[0]}" in err and "compute.device: cpu" in err
