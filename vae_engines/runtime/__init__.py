"""Run any engine the pipeline builds: `load(path)` gives a Decoder whatever the kind --
TensorRT or TensorRT-RTX plan, compiled PyTorch package, ONNX graph -- with
`decode(latent)` on torch tensors, `stream(latent, window, overlap)`, and `as_diffusers`
for apps written against diffusers' AutoencoderOobleck. An INT8 engine guards the latent
range it was calibrated on (runtime.guard: `on_range`, `LatentRangeWarning`). bench and
evaluate use the same objects, so what is measured is what an app runs."""

from vae_engines.runtime.base import Decoder, Shape
from vae_engines.runtime.diffusers import as_diffusers
from vae_engines.runtime.guard import LatentRangeWarning, OnRange
from vae_engines.runtime.load import load

__all__ = ["Decoder", "LatentRangeWarning", "OnRange", "Shape", "as_diffusers", "load"]
