"""Shared fixtures: tiny Oobleck models made and saved by the tests themselves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

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


def save_diffusers_folder(vae, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    config = {"_class_name": "AutoencoderOobleck", **{k: vae.config[k] for k in TINY}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A diffusers AutoencoderOobleck folder of the tiny architecture."""
    return save_diffusers_folder(make_vae(), tmp_path_factory.mktemp("ckpt") / "vae")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    """fp32 ONNX of the tiny decoder."""
    from vae_engines.model.export import onnx_from_decoder
    from vae_engines.model.oobleck import fold_decoder, load_checkpoint

    loaded = load_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("onnx") / "fp32.onnx"
    return onnx_from_decoder(fold_decoder(loaded.vae), out, opset=18, metadata={"hop": loaded.hop,
                                                                                 "sampling_rate": 48000})


@pytest.fixture
def isolated_env(tmp_path) -> dict:
    """Environment for subprocesses: no user or site config of DVC or git leaks in."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_DATA_HOME=str(home / ".local/share"), DVC_SITE_CACHE_DIR=str(home / "dvc-site"),
               DVC_NO_ANALYTICS="1", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", PYTHONUNBUFFERED="1")
    return env


def snapshot(project: Path) -> dict:
    out = {}
    for top in ("data", "engines", "reports"):
        for p in sorted((project / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(project))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def project(tmp_path, tiny_checkpoint, tiny_onnx):
    """A scratch project with one good artifact in each output folder."""
    for top in ("data/calibration", "engines/onnx", "reports"):
        (tmp_path / top).mkdir(parents=True)
    (tmp_path / "data/calibration/latents.npy").write_bytes(b"previous good")
    (tmp_path / "engines/onnx/fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "reports/env.json").write_text("{}")
    params = {"model": {"source": "checkpoint", "checkpoint": str(tiny_checkpoint)},
              "profile": {"min_frames": 2, "opt_frames": 4, "max_frames": 8},
              "int8": {"m": {"calibrator": "minmax"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def run_stage(project: Path, stage: str, *args: str, params: dict | None = None) -> subprocess.CompletedProcess:
    if params is not None:
        base = yaml.safe_load((project / "params.yaml").read_text())
        for section, values in params.items():
            if isinstance(values, dict) and isinstance(base.get(section), dict):
                base[section].update(values)
            else:
                base[section] = values
        (project / "params.yaml").write_text(yaml.safe_dump(base))
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args], cwd=project,
                          capture_output=True, text=True)
