"""The Oobleck VAE: build it, load real weights, and fold it into an export-ready decoder.

ACE-Step 1.5 ships its VAE as a diffusers `AutoencoderOobleck` folder; Stable Audio's
Oobleck has the same classes with other strides, so the architecture always comes from
the checkpoint's own config when there is one, and from the ACE-Step presets otherwise.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vae_engines.core.errors import UserError

if TYPE_CHECKING:
    import torch

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
# Same structure at reduced width (diffusers ties the encoder width to the latent size,
# so encoder_hidden_size stays 128 for 64 latent channels).
ACESTEP_15_SMALL = {**ACESTEP_15, "channel_multiples": [1, 1, 2, 2, 4], "decoder_channels": 64}
ARCHITECTURES = {"acestep-1.5": ACESTEP_15, "acestep-1.5-small": ACESTEP_15_SMALL}
# The small trained default (see its MODEL_CARD.md): acestep-1.5-small, fp16 safetensors.
FIXTURE_DIR = Path(__file__).parents[1] / "fixtures" / "acestep15-small"


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

    @property
    def audio_channels(self) -> int:
        return int(self.vae.config.audio_channels)


def _quiet_diffusers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a checkpoint is a local path, never a hub id
    import warnings

    warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()


def build_vae(config: dict, seed: int) -> Any:
    """An AutoencoderOobleck of `config` with weights drawn from `seed`."""
    _quiet_diffusers()
    import torch
    from diffusers import AutoencoderOobleck

    torch.manual_seed(seed)
    return AutoencoderOobleck(**config).eval()


def _adapt_weight_norm_keys(state: dict, expected: dict) -> dict:
    """Map the weight-norm spellings checkpoints use onto diffusers' legacy weight_g/weight_v.

    torch's newer parametrization writes `parametrizations.weight.original0/1`; an already
    folded checkpoint has a plain `weight`. Both are converted so one loader takes all three.
    """
    import torch

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
        result = module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise UserError(f"{source} does not match the model architecture ({first[:200]}); give a checkpoint "
                        "of this architecture, or put its config.json beside it") from None
    del result


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({str(exc)[:120]}); re-download or "
                        "re-save it") from None


def _config_beside(path: Path) -> dict | None:
    for candidate in (path.parent / "config.json", path.parent / (path.stem + ".json")):
        if candidate.is_file():
            try:
                cfg = json.loads(candidate.read_text())
            except json.JSONDecodeError as exc:
                raise UserError(f"{candidate} is not valid JSON ({exc.msg}); fix or remove it") from None
            return {k: v for k, v in cfg.items() if not k.startswith("_")}
    return None


def load_checkpoint(path: str | os.PathLike) -> LoadedVAE:
    """Load a diffusers AutoencoderOobleck folder or a bare .safetensors state dict.

    A state dict may hold the whole VAE (`encoder.*`, `decoder.*`) or the decoder alone.
    Its architecture is read from a config.json beside it, else ACE-Step 1.5's.
    """
    _quiet_diffusers()
    from vae_engines.core.fileio import sha256_file

    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; fix model.checkpoint in params.yaml")
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise UserError(f"{path} has no config.json (nor vae/config.json); point model.checkpoint at the "
                            "diffusers VAE folder")
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise UserError(f"{folder} has no .safetensors weights; give the folder that holds them")
        cfg = _config_beside(weights[0]) or {}
        cfg = {k: v for k, v in cfg.items() if k in ACESTEP_15}
        vae = build_vae({**ACESTEP_15, **cfg}, seed=0)
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
    cfg = _config_beside(path) or {}
    cfg = {k: v for k, v in cfg.items() if k in ACESTEP_15}
    vae = build_vae({**ACESTEP_15, **cfg}, seed=0)
    digest = sha256_file(path)[:12]
    if any(k.startswith("decoder.") for k in state):
        _load_state(vae, state, path)
        return LoadedVAE(vae.eval(), f"safetensors VAE {path} (sha256 {digest})", has_encoder=True)
    _load_state(vae.decoder, state, path)
    return LoadedVAE(vae.eval(), f"safetensors decoder {path} (sha256 {digest})", has_encoder=False)


def load_vae(params: Any) -> LoadedVAE:
    """The VAE that `ModelParams` names."""
    if params.source == "checkpoint":
        return load_checkpoint(params.checkpoint)
    if params.source == "fixture":
        loaded = load_checkpoint(FIXTURE_DIR)
        steps = json.loads((FIXTURE_DIR / "train_log.json").read_text())["steps"]
        loaded.description = (f"trained fixture acestep-1.5-small ({steps} steps on the built-in corpus; "
                              "not ACE-Step's weights)")
        return loaded
    vae = build_vae(ARCHITECTURES[params.architecture], params.seed)
    return LoadedVAE(vae, f"seeded {params.architecture} (seed {params.seed}, random weights)", has_encoder=True)


def _folded_snake_class() -> type:
    import torch
    from torch import nn

    class FoldedSnake(nn.Module):
        """Snake with its weight-only terms precomputed: x + inv_beta * sin(alpha * x)^2.

        exp(alpha) and 1 / (exp(beta) + 1e-9) are constants of the weights; computing them
        in the graph makes fp16 overflow (exp of a large beta) and hides them from quantizers.
        """

        def __init__(self, alpha: torch.Tensor, beta: torch.Tensor):
            super().__init__()
            self.register_buffer("alpha", torch.exp(alpha.detach().float()))
            self.register_buffer("inv_beta", (torch.exp(beta.detach().float()) + 1e-9).reciprocal())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = torch.sin(self.alpha * x)
            return x + self.inv_beta * (s * s)

    return FoldedSnake


def fold_decoder(vae: Any) -> Any:
    """The VAE's decoder with weight norm folded into plain weights and Snake constants
    precomputed, in place (idempotent). Export and the PyTorch runtime share it."""
    import torch
    from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d

    decoder = vae.decoder
    if getattr(decoder, "_vae_engines_folded", False):
        return decoder
    FoldedSnake = _folded_snake_class()
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
