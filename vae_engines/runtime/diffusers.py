"""The face of diffusers' `AutoencoderOobleck` over any engine, so an app swaps its decoder
in one line:

    pipe.vae = as_diffusers(load("engines/torch/fp16.pt2"), pipe.vae)

`decode(z)` runs the engine and returns an object with `.sample` (and `[0]`), in z's
dtype, as diffusers does; everything else -- `encode`, `config`, `dtype`, `to` -- is the
wrapped model's, so code that also encodes keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vae_engines.runtime.base import Decoder


@dataclass
class DecoderOutput:
    """diffusers' OobleckDecoderOutput shape: `.sample`, or `[0]` as a tuple would."""

    sample: Any

    def __getitem__(self, index: int) -> Any:
        return (self.sample,)[index]


class DiffusersDecoder:
    """An engine behind `AutoencoderOobleck.decode`'s signature (see the module docstring)."""

    def __init__(self, engine: Decoder, vae: Any = None) -> None:
        self.engine = engine
        self.vae = vae

    def decode(self, z: Any, return_dict: bool = True, generator: Any = None) -> Any:
        del generator  # decoding is deterministic; diffusers accepts and ignores it too
        audio = self.engine.decode(z).to(device=z.device, dtype=z.dtype)
        return DecoderOutput(audio) if return_dict else (audio,)

    def __getattr__(self, name: str) -> Any:
        if self.vae is None:
            raise AttributeError(f"{name}: only decode() is available without the wrapped model "
                                 "(as_diffusers(engine, vae))")
        return getattr(self.vae, name)


def as_diffusers(engine: Decoder, vae: Any = None) -> DiffusersDecoder:
    """`engine` with AutoencoderOobleck's decode(); other attributes come from `vae`."""
    return DiffusersDecoder(engine, vae)
