"""Run any engine the pipeline builds: `load(path)` gives a Decoder whatever the kind --
TensorRT or TensorRT-RTX plan, compiled PyTorch package, ONNX graph -- with
`decode(latent)` on torch tensors, `stream(latent, window, overlap)`, and `as_diffusers`
for apps written against diffusers' AutoencoderOobleck. bench and evaluate use the same
objects, so what is measured is what an app runs."""

from vae_engines.runtime.base import Decoder, Shape
from vae_engines.runtime.diffusers import as_diffusers
from vae_engines.runtime.load import load

__all__ = ["Decoder", "Shape", "as_diffusers", "load"]
