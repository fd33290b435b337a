"""The Oobleck VAE: load real weights (or seed random ones), and fold it into an
export-ready decoder.

ACE-Step 1.5 ships its VAE as a diffusers `AutoencoderOobleck` folder; Stable Audio's
Oobleck has the same classes with other strides, so the architecture always comes from the
checkpoint's own config.json (checked: a JSON object naming AutoencoderOobleck, with
fields of the right types), and from ACE-Step 1.5's when a bare state dict has none.
`model.checkpoint` is always a path, so DVC tracks it: the shipped small trained model
(vae_engines/fixtures/acestep15-small), the full-size architecture's config alone
(vae_engines/fixtures/acestep-1.5, for `source: seeded`), or a user's checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import sha256_file
from vae_engines.core.params import ModelParams

FIXTURES = Path(__file__).parents[1] / "fixtures"
FIXTURE_DIR = FIXTURES / "acestep15-small"
# ACE-Step 1.5's vae/config.json. diffusers' own defaults are Stable Audio's (44.1 kHz,
# strides [2,4,4,8,8]), so the config is always passed in full.
ACESTEP_15 = dict(
    encoder_hidden_size=128,
    downsampling_ratios=[2, 4, 4, 6, 10],
    channel_multiples=[1, 2, 4, 8, 16],
    decoder_channels=128,
    decoder_input_channels=64,
    audio_channels=2,
    sampling_rate=48000,
)
INT_FIELDS = ("encoder_hidden_size", "decoder_channels", "decoder_input_channels", "audio_channels", "sampling_rate")
LIST_FIELDS = ("downsampling_ratios", "channel_multiples")
CLASS_NAME = "AutoencoderOobleck"


@dataclass
class LoadedVAE:
    vae: Any  # diffusers AutoencoderOobleck, eval mode, float32
    description: str  # provenance: what the weights are
    has_encoder: bool  # False for a decoder-only state dict (its encoder is untrained)

    @property
    def sampling_rate(self) -> int:
        return int(self.vae.config.sampling_rate)

    @property
    def hop(self) -> int:
        return int(math.prod(self.vae.config.downsampling_ratios))

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.decoder_input_channels)


def _quiet_diffusers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a checkpoint is a local path, never a hub id
    warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
    try:
        # The Oobleck VAE needs neither transformers nor peft; telling diffusers so keeps an
        # installed transformers / peft of a version diffusers cannot import (seen on a GPU
        # image with transformers 5.17 and peft 0.21) from breaking the import.
        from diffusers.utils import import_utils

        import_utils._transformers_available = False
        import_utils._peft_available = False
        from diffusers.utils import logging as dlog
    except Exception as exc:  # an incompatible transformers / peft beside diffusers fails here
        raise UserError(f"diffusers cannot be imported ({type(exc).__name__}: {str(exc)[:100]}); install a "
                        "diffusers that matches this environment's transformers, or uninstall transformers") from None
    dlog.set_verbosity_error()


def build_vae(config: dict, seed: int) -> Any:
    """An AutoencoderOobleck of `config` with weights drawn from `seed`."""
    _quiet_diffusers()
    from diffusers import AutoencoderOobleck  # after _quiet_diffusers(): see there

    torch.manual_seed(seed)
    return AutoencoderOobleck(**config).eval()


def read_config(path: Path) -> dict:
    """The architecture fields of an Oobleck config.json, checked field by field."""
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({getattr(exc, 'msg', exc)}); fix or remove it") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a {type(raw).__name__}, not a JSON object of model fields; point "
                        "model.checkpoint at a diffusers AutoencoderOobleck folder")
    name = raw.get("_class_name")
    if name is not None and name != CLASS_NAME:
        raise UserError(f"{path} describes a {name}, not an {CLASS_NAME}; point model.checkpoint at ACE-Step's "
                        "vae/ folder (its config.json names AutoencoderOobleck)")
    config = {}
    for key in INT_FIELDS:
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{path}: {key} is {value!r}, not a positive integer; fix the config")
            config[key] = value
    for key in LIST_FIELDS:
        if key in raw:
            value = raw[key]
            if not isinstance(value, list) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise UserError(f"{path}: {key} is {value!r}, not a list of positive integers; fix the config")
            config[key] = value
    merged = {**ACESTEP_15, **config}
    if len(merged["downsampling_ratios"]) != len(merged["channel_multiples"]):
        raise UserError(f"{path}: downsampling_ratios and channel_multiples differ in length; fix the config")
    return merged


def _adapt_weight_norm_keys(state: dict, expected: dict) -> dict:
    """Map the weight-norm spellings checkpoints use onto diffusers' legacy weight_g/weight_v.

    torch's newer parametrization writes `parametrizations.weight.original0/1`; an already
    folded checkpoint has a plain `weight`. Both are converted so one loader takes all three.
    """
    out = {}
    for key, value in state.items():
        if ".parametrizations.weight.original" in key:
            base, idx = key.split(".parametrizations.weight.original")
            key = f"{base}.weight_{'g' if idx == '0' else 'v'}"
        elif key.endswith(".weight") and key not in expected and key[:-7] + ".weight_v" in expected:
            base = key[:-7]
            g_shape = expected[base + ".weight_g"].shape
            dims = [d for d in range(value.dim()) if g_shape[d] == 1]
            out[base + ".weight_v"] = value
            out[base + ".weight_g"] = torch.linalg.vector_norm(value, dim=dims, keepdim=True)
            continue
        out[key] = value
    return out


def _load_state(module: Any, state: dict, source: Path) -> None:
    state = _adapt_weight_norm_keys(state, module.state_dict())
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        first = lines[0] if lines else str(exc)
        raise UserError(f"{source} does not match the architecture of its config.json ({first[:160]}); give a "
                        "checkpoint whose weights and config.json belong together") from None


def _read_safetensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({str(exc)[:120]}); re-download or "
                        "re-save it") from None


def _config_beside(path: Path) -> Path | None:
    for candidate in (path.parent / "config.json", path.parent / (path.stem + ".json")):
        if candidate.is_file():
            return candidate
    return None


def _folder(path: Path) -> Path:
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise UserError(f"{path} has no config.json (nor vae/config.json); point model.checkpoint at the "
                        "diffusers VAE folder")
    return folder


def load_checkpoint(path: str | os.PathLike) -> LoadedVAE:
    """Load a diffusers AutoencoderOobleck folder (or a root holding vae/) or a bare
    .safetensors state dict of the whole VAE or of the decoder alone (architecture from a
    config.json beside it, else ACE-Step 1.5's)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; fix model.checkpoint in params.yaml")
    if path.is_dir():
        folder = _folder(path)
        config = read_config(folder / "config.json")
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise UserError(f"{folder} has a config.json but no .safetensors weights; add them, or set model.source: "
                            "seeded to use its architecture with random weights")
        vae = build_vae(config, seed=0)
        state: dict = {}
        for w in weights:
            state.update(_read_safetensors(w))
        _load_state(vae, state, folder)
        digest = sha256_file(weights[0])[:12]
        return LoadedVAE(vae.eval(), f"diffusers folder {folder} (sha256 {digest})", has_encoder=True)
    if path.suffix != ".safetensors":
        raise UserError(f"{path} is neither a diffusers folder nor a .safetensors file; convert it with "
                        "safetensors.torch.save_file")
    state = _read_safetensors(path)
    beside = _config_beside(path)
    vae = build_vae(read_config(beside) if beside else dict(ACESTEP_15), seed=0)
    digest = sha256_file(path)[:12]
    if any(k.startswith("decoder.") for k in state):
        _load_state(vae, state, path)
        return LoadedVAE(vae.eval(), f"safetensors VAE {path} (sha256 {digest})", has_encoder=True)
    _load_state(vae.decoder, state, path)
    return LoadedVAE(vae.eval(), f"safetensors decoder {path} (sha256 {digest})", has_encoder=False)


def load_vae(params: ModelParams) -> LoadedVAE:
    """The VAE that ModelParams names: a checkpoint's weights, or (source seeded) its
    architecture with weights drawn from params.seed."""
    path = Path(params.checkpoint)
    if params.source == "seeded":
        if not path.exists():
            raise UserError(f"checkpoint {path} does not exist; fix model.checkpoint in params.yaml")
        config_path = _config_beside(path) if path.is_file() else _folder(path) / "config.json"
        config = read_config(config_path) if config_path else dict(ACESTEP_15)
        name = path.name
        return LoadedVAE(build_vae(config, params.seed),
                         f"seeded {name} architecture (seed {params.seed}, random weights)", has_encoder=True)
    loaded = load_checkpoint(path)
    log_path = _folder(path) / "train_log.json" if path.is_dir() else None
    if log_path is not None and log_path.is_file() and path.resolve() == FIXTURE_DIR.resolve():
        steps = json.loads(log_path.read_text())["steps"]
        loaded.description = (f"trained fixture acestep-1.5-small ({steps} steps on the built-in corpus; "
                              "not ACE-Step's weights)")
    return loaded


def encode_audio(vae: Any, audio: Any, device: Any, progress: bool = True) -> Any:
    """Posterior means [N, C, T] (numpy float32) of audio windows [N, 2, S], one at a time."""
    encoder = vae.to(device)
    out = []
    with torch.inference_mode():
        for clip in tqdm(audio, desc="encoding", unit="clip", disable=None if progress else True, leave=False):
            x = torch.from_numpy(np.ascontiguousarray(clip[None])).to(device)
            out.append(encoder.encode(x).latent_dist.mean[0].float().cpu().numpy())
    vae.to("cpu")
    return np.stack(out).astype(np.float32)


class FoldedSnake(nn.Module):
    """Snake with its weight-only terms precomputed: x + inv_beta * sin(alpha * x)^2.

    exp(alpha) and 1 / (exp(beta) + 1e-9) are constants of the weights; computing them in
    the graph makes fp16 overflow (exp of a large beta) and hides them from quantizers.
    """

    def __init__(self, alpha: torch.Tensor, beta: torch.Tensor):
        super().__init__()
        self.register_buffer("alpha", torch.exp(alpha.detach().float()))
        self.register_buffer("inv_beta", (torch.exp(beta.detach().float()) + 1e-9).reciprocal())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sin(self.alpha * x)
        return x + self.inv_beta * (s * s)


def fold_decoder(vae: Any) -> Any:
    """The VAE's decoder with weight norm folded into plain weights and Snake constants
    precomputed, in place (idempotent). Export and the PyTorch runtimes share it."""
    _quiet_diffusers()
    from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d  # after _quiet_diffusers()

    decoder = vae.decoder
    if getattr(decoder, "_vae_engines_folded", False):
        return decoder
    with torch.no_grad():
        for module in decoder.modules():
            if hasattr(module, "weight_g"):
                torch.nn.utils.remove_weight_norm(module)

        def swap(parent: torch.nn.Module) -> None:
            for name, child in parent.named_children():
                if isinstance(child, Snake1d):
                    if not child.logscale:
                        raise UserError("a Snake1d without logscale is not supported; use an Oobleck checkpoint")
                    setattr(parent, name, FoldedSnake(child.alpha, child.beta))
                else:
                    swap(child)

        swap(decoder)
    decoder._vae_engines_folded = True
    return decoder.eval()


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
