"""Shared fixtures: tiny Oobleck models made and saved by the tests themselves, scratch
projects, and the isolated environment every subprocess (DVC, git, stages) runs in."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The ACE-Step structure (strides [2,4,4,6,10], 48 kHz, hop 1920) at a width that runs in
# milliseconds: 8 decoder channels throughout.
TINY = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 6, 10], channel_multiples=[1, 1, 1, 1, 1],
            decoder_channels=8, decoder_input_channels=64, audio_channels=2, sampling_rate=48000)


def make_vae(config: dict = TINY, seed: int = 0):
    import torch

    from vae_engines.model.oobleck import build_vae

    vae = build_vae(config, seed)
    # diffusers initialises Snake with alpha = beta = 0; give them spread so the folding is exercised
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return vae


def save_diffusers_folder(vae, folder: Path, class_name: str = "AutoencoderOobleck") -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    config = {"_class_name": class_name, **{k: vae.config[k] for k in TINY}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def latents(n: int, frames: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 64, frames)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A diffusers AutoencoderOobleck folder of the tiny architecture."""
    return save_diffusers_folder(make_vae(), tmp_path_factory.mktemp("ckpt") / "vae")


def folded_file(checkpoint: Path, path: Path) -> Path:
    """The export stage's folded decoder (model.folded) of `checkpoint`, written to `path`."""
    from vae_engines.model.folded import save_folded
    from vae_engines.model.oobleck import fold_decoder, load_checkpoint

    loaded = load_checkpoint(checkpoint)
    return save_folded(loaded, fold_decoder(loaded.vae), path)


@pytest.fixture(scope="session")
def tiny_folded(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny decoder, folded, as the export stage writes it for the PyTorch engines' stages."""
    return folded_file(tiny_checkpoint, tmp_path_factory.mktemp("folded") / "decoder.safetensors")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    """fp32 ONNX of the tiny decoder (opset 19)."""
    from vae_engines.model.export import onnx_from_decoder
    from vae_engines.model.oobleck import fold_decoder, load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("onnx") / "fp32.onnx"
    return onnx_from_decoder(fold_decoder(loaded.vae), out, opset=19,
                             metadata={"hop": loaded.hop, "sampling_rate": 48000})


@pytest.fixture
def isolated_env(tmp_path) -> dict:
    """Environment for subprocesses: no user or site config of DVC or git leaks in."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_", "XDG_", "AWS_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_DATA_HOME=str(home / ".local/share"), DVC_SITE_CACHE_DIR=str(home / "dvc-site"),
               DVC_NO_ANALYTICS="1", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", PYTHONUNBUFFERED="1",
               PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    return env


def snapshot(project: Path, tops: tuple[str, ...] = ("data", "engines", "reports")) -> dict:
    out = {}
    for top in tops:
        for p in sorted((project / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(project))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def edit_params(project: Path, change) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# -- stage-level scratch project ------------------------------------------------------------
@pytest.fixture
def project(tmp_path, tiny_checkpoint, tiny_onnx):
    """A scratch project with one good artifact in each output folder and a tiny model."""
    from vae_engines.data.corpus import write_corpus

    for top in ("data/calibration", "engines/onnx", "reports"):
        (tmp_path / top).mkdir(parents=True)
    (tmp_path / "data/calibration/latents.npy").write_bytes(b"previous good")
    (tmp_path / "engines/onnx/fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    write_corpus(tmp_path / "data/corpus", clips=4, seconds=0.5, sr=48000, seed=0)
    params = {"model": {"checkpoint": str(tiny_checkpoint)},
              "profile": {"min_frames": 2, "opt_frames": 4, "max_frames": 8},
              "calibration": {"count": 2}, "holdout": {"count": 2, "fraction": 0.5, "roundtrip_clips": 1,
                                                       "roundtrip_seconds": 0.2},
              "bench": {"frames": [2, 4], "stream_frames": 8, "stream_window": 4, "stream_overlap": 1},
              "int8": {"m": {"calibrator": "minmax"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def run_stage(project: Path, stage: str, *args: str, params: dict | None = None,
              env: dict | None = None) -> subprocess.CompletedProcess:
    if params is not None:
        base = yaml.safe_load((project / "params.yaml").read_text())
        for section, values in params.items():
            if isinstance(values, dict) and isinstance(base.get(section), dict):
                base[section].update(values)
            else:
                base[section] = values
        (project / "params.yaml").write_text(yaml.safe_dump(base))
    script = str(ROOT / "stages" / f"{stage}.py")
    return _stage_server().run(script, list(args), project, {**os.environ, **(env or {})})


class _StageServer:
    """tests/stage_server.py, started once: each stage runs in a child forked after the
    imports every stage pays (~2.5 s of CPU each on the 2-core CI machines, ~40 runs)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("stage_server.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.n = 0

    def run(self, script: str, args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = dict(script=script, args=args, cwd=str(cwd), env=env, stdout=str(out), stderr=str(err))
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
            assert reply, "the stage server (tests/stage_server.py) ended"
            return subprocess.CompletedProcess([sys.executable, script, *args], json.loads(reply)["returncode"],
                                               out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_SERVER: _StageServer | None = None


def _stage_server() -> _StageServer:
    global _SERVER
    if _SERVER is None or _SERVER.proc.poll() is not None:
        import atexit

        _SERVER = _StageServer()
        atexit.register(_SERVER.close)
    return _SERVER


# -- INT8 variants of the tiny graph -------------------------------------------------------------
@pytest.fixture
def calibrated(tmp_path, tiny_onnx) -> Path:
    """A folder with 4 calibration latents of the tiny graph (cal/) and their statistics (s.npz)."""
    from vae_engines.data.latentset import write_latent_set
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx
    from vae_engines.quant.qdq import quantizable_layers
    from vae_engines.quant.stats import collect, quantizable_tensors, write_stats

    model = load_onnx(tiny_onnx)
    layers = quantizable_layers(model)
    cal = latents(4, 16, seed=5)
    write_latent_set(tmp_path / "cal", cal, {"source": "test"})
    write_stats(tmp_path / "s.npz", tmp_path / "s.json", collect(GraphExecutor(model), quantizable_tensors(layers), cal),
                layers, {})
    return tmp_path


def quantize_minmax(folder: Path, tiny_onnx: Path, name: str, **recipe) -> dict:
    """quantize_variant of a minmax recipe (fp32 float parts) on `calibrated`'s folder."""
    from vae_engines.core.params import Int8Variant
    from vae_engines.quant.quantize import quantize_variant

    return quantize_variant(name, Int8Variant(calibrator=recipe.pop("calibrator", "minmax"), float_type="fp32",
                                              **recipe), fp32_onnx=tiny_onnx, stats_npz=folder / "s.npz",
                            calibration_dir=folder / "cal", out_onnx=folder / f"{name}.onnx",
                            ranges_json=folder / f"{name}.json", device="cpu")


# -- DVC-level scratch project --------------------------------------------------------------
def small_params(checkpoint: Path) -> dict:
    """The shipped params.yaml at a size a test runs in about a minute."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["checkpoint"] = str(checkpoint)
    params["compute"]["device"] = "cpu"
    params["profile"].update(min_frames=2, opt_frames=4, max_frames=8)
    params["corpus"].update(clips=6, seconds=0.5)
    params["calibration"].update(count=3)
    params["holdout"].update(count=2, roundtrip_clips=1, roundtrip_seconds=0.2)
    params["int8"] = {"entropy": {"calibrator": "entropy"}, "minmax": {"calibrator": "minmax"},
                      "minmax_fp8": {"calibrator": "minmax", "format": "fp8"}}
    params["sensitivity"]["max_latents"] = 1
    params["evaluate"]["clip_seconds"] = 0.1
    params["bench"].update(frames=[2, 4], repeats=3, warmup=0, stream_frames=8, stream_window=4, stream_overlap=1,
                           runtimes=["onnxruntime", "tensorrt", "torch"])
    return params


def make_dvc_project(where: Path, checkpoint: Path, env: dict, params: dict | None = None) -> Path:
    """A git + DVC repository holding this project's pipeline and code, committed."""
    project = where
    project.mkdir(parents=True, exist_ok=True)
    for item in ("dvc.yaml", "check/dvc.yaml", "stages", "vae_engines", "benchmarks", ".dvcignore", ".gitignore",
                 "data/trt_caches", "engines/torch_int8/README.md", "reports/torch/int8/README.md"):
        src = ROOT / item
        dst = project / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst, **(
            {"ignore": shutil.ignore_patterns("__pycache__")} if src.is_dir() else {}))
    (project / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", project / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", project / ".dvc" / "plots")
    (project / "params.yaml").write_text(yaml.safe_dump(params or small_params(checkpoint), sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=project, env=env, check=True)
    return project


def dvc(project: Path, env: dict, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


CHECK_STAGE = "check/dvc.yaml:check"  # the always-run stage, in its own dvc.yaml


def ran_stages(output: str) -> set[str]:
    """The stages `dvc repro` ran ("check" for the check stage)."""
    import re

    return {"check" if s == CHECK_STAGE else s for s in re.findall(r"Running stage '([^']+)'", output)}


@pytest.fixture(scope="session")
def built(tmp_path_factory, tiny_checkpoint):
    """One reproduced and committed project of the tiny model; tests work on copies of it.
    Reproduced by the project's own driver, two stages at a time (50 s where a serial `dvc repro`
    takes 63 s on a 2-core machine); test_pipeline's first test then checks that a plain
    `dvc repro` of it runs only the check stage, as it would after a serial one."""
    import json
    import os

    root = tmp_path_factory.mktemp("built")
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_", "XDG_", "AWS_"))}
    env.update(HOME=str(home), DVC_NO_ANALYTICS="1", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    project = make_dvc_project(root / "project", tiny_checkpoint, env)
    record = root / "first.json"
    first = subprocess.run([str(BIN / "vae-engines"), "repro", "--jobs", "2", "--record", str(record)], cwd=project,
                           env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, f"vae-engines repro:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}"
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "outputs"], cwd=project, env=env, check=True)
    stages = json.loads(record.read_text())["stages"]
    return project, {"check" if s["stage"] == CHECK_STAGE else s["stage"] for s in stages if s["outcome"] == "ran"}
