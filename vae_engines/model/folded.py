"""The folded decoder as one file, so the stages that build and time PyTorch engines need
neither diffusers nor the checkpoint.

The export stage writes `engines/decoder.safetensors`: model.oobleck.fold_decoder's state
dict (plain convolution weights, Snake's exp(alpha) and 1 / (exp(beta) + 1e-9)), with the
architecture, the runtime shape facts and the weights' provenance in the file's metadata.
`load_folded` rebuilds the same module tree from this module's classes -- the same
submodule names, the same layers and the same forward as diffusers' OobleckDecoder, op for
op (a test holds them bitwise equal) -- and puts the saved tensors in it without drawing
any weights first.

Why: on the lent H100 a `compile_int8` stage spent 8.9 s of its 23.5 s reading the model
(benchmarks/results/gpu_pipeline/h100_2231440/): importing diffusers, whose autoencoders
package imports its UNets, transformers and scipy.stats on the way, then drawing the full
VAE's 169 M seeded weights, encoder included, of which the decoder keeps 84 M.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path
from vae_engines.model.oobleck import FoldedSnake, LoadedVAE

FORMAT = "vae-engines folded Oobleck decoder 1"
DILATIONS = (1, 3, 9)  # Oobleck's residual units in each decoder block


def _snake(channels: int) -> FoldedSnake:
    # on the CPU even inside load_folded's meta-device block: the first exp of a meta tensor
    # imports PyTorch's meta kernels, 1.0 s on this project's CPU; these are C values each
    zeros = torch.zeros(1, channels, 1, device="cpu")
    return FoldedSnake(zeros, zeros)


def _folded(conv: nn.Module) -> nn.Module:
    """`conv` with its parameters in the order removing weight norm leaves them (bias, then
    weight), so that parameter lists -- and the tune stage's architecture hash -- match."""
    conv._parameters["weight"] = conv._parameters.pop("weight")
    return conv


class ResidualUnit(nn.Module):
    """diffusers' OobleckResidualUnit, folded."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.snake1 = _snake(channels)
        self.conv1 = _folded(nn.Conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation))
        self.snake2 = _snake(channels)
        self.conv2 = _folded(nn.Conv1d(channels, channels, kernel_size=1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.snake2(self.conv1(self.snake1(hidden))))
        crop = (hidden.shape[-1] - out.shape[-1]) // 2
        if crop > 0:
            hidden = hidden[..., crop:-crop]
        return hidden + out


class DecoderBlock(nn.Module):
    """diffusers' OobleckDecoderBlock, folded: Snake, the upsampler, three residual units."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.snake1 = _snake(in_channels)
        self.conv_t1 = _folded(nn.ConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                                  padding=math.ceil(stride / 2)))
        self.res_unit1, self.res_unit2, self.res_unit3 = (ResidualUnit(out_channels, d) for d in DILATIONS)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_t1(self.snake1(hidden))
        return self.res_unit3(self.res_unit2(self.res_unit1(hidden)))


class Decoder(nn.Module):
    """diffusers' OobleckDecoder, folded; `architecture` as `architecture_of` gives it."""

    _vae_engines_folded = True

    def __init__(self, channels: int, input_channels: int, audio_channels: int, upsampling_ratios: list[int],
                 channel_multiples: list[int]) -> None:
        super().__init__()
        widths = [channels * m for m in [1] + list(channel_multiples)]
        self.conv1 = _folded(nn.Conv1d(input_channels, widths[-1], kernel_size=7, padding=3))
        last = len(upsampling_ratios)
        self.block = nn.ModuleList(DecoderBlock(widths[last - i], widths[last - i - 1], stride)
                                   for i, stride in enumerate(upsampling_ratios))
        self.snake1 = _snake(channels)
        self.conv2 = _folded(nn.Conv1d(channels, audio_channels, kernel_size=7, padding=3, bias=False))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(hidden)
        for block in self.block:
            hidden = block(hidden)
        return self.conv2(self.snake1(hidden))


def architecture_of(config: Any) -> dict:
    """Decoder's arguments from an AutoencoderOobleck config (as AutoencoderOobleck passes them)."""
    return {"channels": int(config.decoder_channels), "input_channels": int(config.decoder_input_channels),
            "audio_channels": int(config.audio_channels),
            "upsampling_ratios": [int(r) for r in reversed(config.downsampling_ratios)],
            "channel_multiples": [int(m) for m in config.channel_multiples]}


@dataclass
class Folded:
    """What the engine-building stages need of the model: the folded decoder (float32, CPU,
    eval), LoadedVAE's shape facts, and where the weights came from."""

    decoder: nn.Module
    latent_channels: int
    hop: int
    sampling_rate: int
    description: str


def save_folded(loaded: LoadedVAE, decoder: nn.Module, path: str | Path) -> Path:
    """Write `decoder` (fold_decoder(loaded.vae)) to `path`, atomically."""
    meta = {"format": FORMAT, "architecture": architecture_of(loaded.vae.config),
            "shape": {"latent_channels": loaded.latent_channels, "hop": loaded.hop,
                      "sampling_rate": loaded.sampling_rate},
            "model": loaded.description}
    tensors = {name: t.detach().float().contiguous() for name, t in decoder.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"vae_engines": json.dumps(meta)})
    return Path(path)


def load_folded(path: str | Path) -> Folded:
    """The folded decoder `save_folded` wrote at `path`."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vae_engines", "{}"))
            if meta.get("format") != FORMAT:
                raise UserError(f"{path} is not a folded decoder written by the export stage; run dvc repro")
            state = {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, SafetensorError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the folded decoder {path} ({str(exc)[:100]}); run dvc repro") from None
    with torch.device("meta"):
        decoder = Decoder(**meta["architecture"])
    decoder.load_state_dict(state, assign=True)  # strict: a missing or extra tensor is an error
    return Folded(decoder.eval(), description=meta["model"], **meta["shape"])
