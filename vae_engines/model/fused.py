"""The folded decoder as a chain of fused convolutions (kernels.op): what fused engines run.

Layer for layer, with the Snake that consumes a layer's output applied in that layer's
epilogue:

    conv1                          s = block.0.snake1(conv1(latent))
    block.i  conv_t1               y = conv_t1(s)                the residual stream
                                   s = res_unit1.snake1(y)
             res_unitJ.conv1       s = res_unitJ.snake2(conv1(s))
             res_unitJ.conv2       y += conv2(s), in place; s = the next Snake(y)
    conv2                          audio = conv2(s), float32 [B, A, T * hop]

The residual stream and every layer input are fp16, channels-last [B, T, C]. An INT8
engine (`LayerQuant` per layer, from an INT8 variant's recipe: compiled.int8) runs each
quantized layer with int8 weights (per output channel) on an int8 input, which the layer
before it writes already quantized with the calibrated scale -- the same scales, rounding
and saturation as the variant's Q/DQ graph -- and reads a quantized residual skip (the
fused placement) through int8; the layers the recipe keeps in float run in fp16. An FP8
engine is the same with float8 e4m3fn codes in place of int8 (LayerQuant.fp8: compiled.int8's
fp8, from the same ranges).

`tiles` picks each layer's implementation (kernels.op: a Triton tile, or [] for the torch
reference / cuDNN); compiled.tune chooses them on the GPU at build. A tile under a residual
unit's own name ("block.4.res_unit2") runs that unit's two convolutions as one kernel
(kernels.triton_unit: the k=7 output stays on chip), where the unit is narrow enough for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vae_engines.kernels import op as _ops  # noqa: F401  (registers torch.ops.vae_engines.*)
from vae_engines.kernels.reference import conv_weight, phase_weight, quantize


@dataclass(frozen=True)
class LayerSpec:
    """One convolution of the chain: its geometry and its place in the dataflow."""

    name: str  # module path in the decoder, as quant.qdq names layers
    taps: int
    dilation: int
    padding: int
    stride: int  # > 0: a ConvTranspose of this stride (run as a 2-tap phase convolution)
    residual: bool  # adds into the residual stream (a residual unit's k=1 convolution)
    audio: bool  # the last convolution: its output is the decoder's
    snake: str | None  # the Snake applied to the output for the next layer

    @property
    def store_y(self) -> bool:
        """Its output itself is kept: the residual stream a ConvTranspose starts, or the audio."""
        return self.stride > 0 or self.audio


@dataclass(frozen=True)
class LayerQuant:
    """One layer of an INT8 (or FP8) engine. input_scale > 0: int8 weights `weight` (the conv's
    own layout) with per-output-channel `weight_scale`, on an int8 input of that scale -- float8
    e4m3fn weights and input where `fp8`; 0: the layer stays fp16. skip_scale > 0: the residual
    it adds into is read through int8 Q/DQ. fp8_acc (fp8): the products Hopper's tensor cores add
    in their reduced-precision sums before each promotion to fp32: -1 once per K slice of the
    kernel's tile, 0 never (faster: the unit kernel's wgmma stays in flight; kernels.op)."""

    input_scale: float = 0.0
    weight: Any = None
    weight_scale: Any = None
    skip_scale: float = 0.0
    fp8: bool = False
    fp8_acc: int = -1


def unit_of(spec: LayerSpec) -> str | None:
    """The residual unit whose k=7 convolution `spec` is ("block.4.res_unit2"), else None."""
    if spec.name.endswith(".conv1") and ".res_unit" in spec.name:
        return spec.name[: -len(".conv1")]
    return None


def _conv_spec(name: str, conv: nn.Module, snake: str | None, residual: bool = False, audio: bool = False) -> LayerSpec:
    if isinstance(conv, nn.ConvTranspose1d):
        stride = conv.stride[0]
        if conv.kernel_size[0] != 2 * stride or conv.padding[0] != stride // 2 or stride % 2 or conv.output_padding[0]:
            raise ValueError(f"{name}: ConvTranspose1d (kernel {conv.kernel_size[0]}, stride {stride}, padding "
                             f"{conv.padding[0]}) is not Oobleck's upsampler (kernel 2s, padding s/2, even s)")
        return LayerSpec(name, 2, 1, 1, stride, residual, audio, snake)
    if conv.stride[0] != 1 or conv.groups != 1:
        raise ValueError(f"{name}: a strided or grouped Conv1d is not part of Oobleck's decoder")
    return LayerSpec(name, conv.kernel_size[0], conv.dilation[0], conv.padding[0], 0, residual, audio, snake)


def layer_specs(decoder: nn.Module) -> list[LayerSpec]:
    """The decoder's convolutions in network order (see the module docstring)."""
    blocks = list(decoder.block)
    specs = [_conv_spec("conv1", decoder.conv1, "block.0.snake1")]
    for i, block in enumerate(blocks):
        units = [f"block.{i}.res_unit{j}" for j in (1, 2, 3)]
        after = f"block.{i + 1}.snake1" if i + 1 < len(blocks) else "snake1"
        specs.append(_conv_spec(f"block.{i}.conv_t1", block.conv_t1, f"{units[0]}.snake1"))
        for j, unit in enumerate(units):
            specs.append(_conv_spec(f"{unit}.conv1", decoder.get_submodule(f"{unit}.conv1"), f"{unit}.snake2"))
            following = f"{units[j + 1]}.snake1" if j + 1 < len(units) else after
            specs.append(_conv_spec(f"{unit}.conv2", decoder.get_submodule(f"{unit}.conv2"), following,
                                    residual=True))
    specs.append(_conv_spec("conv2", decoder.conv2, None, audio=True))
    return specs


class FusedConv(nn.Module):
    """One layer: its weights in the kernel's layout, Snake constants, scales and tile."""

    def __init__(self, spec: LayerSpec, decoder: nn.Module, quant: LayerQuant, consumer: LayerQuant,
                 tile: list[int]) -> None:
        super().__init__()
        self.spec = spec
        conv = decoder.get_submodule(spec.name)
        int8 = quant.input_scale > 0
        weight = quant.weight if int8 else conv.weight.detach().float()
        if int8 and quant.fp8:  # the layout below moves codes, not values: as bytes (float8 lacks CPU indexing ops)
            weight = weight.view(torch.int8)
        matrix = phase_weight(weight, spec.stride) if spec.stride else conv_weight(weight)
        if int8 and quant.fp8:
            matrix = matrix.view(torch.float8_e4m3fn)
        self.register_buffer("weight", matrix if int8 else matrix.half())
        scale = None
        if int8:
            scale = torch.as_tensor(quant.weight_scale, dtype=torch.float32).flatten()
            scale = scale.repeat(spec.stride) if spec.stride else scale
        self.register_buffer("w_scale", scale)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().float().clone())
        snake = decoder.get_submodule(spec.snake) if spec.snake else None
        self.register_buffer("alpha", None if snake is None else snake.alpha.detach().float().flatten().clone())
        self.register_buffer("inv_beta", None if snake is None else snake.inv_beta.detach().float().flatten().clone())
        self.x_scale = float(quant.input_scale)
        self.s_scale = float(consumer.input_scale)  # > 0: the consumer is quantized, and this layer quantizes for it
        self.s_fp8 = bool(consumer.fp8)  # ... to float8 e4m3fn (else int8)
        self.res_scale = float(quant.skip_scale)
        self.fp8_acc = int(quant.fp8_acc)
        self.tile = list(tile)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> Any:
        s = self.spec
        if s.residual:
            return torch.ops.vae_engines.fused_conv_residual_(
                x, self.weight, self.w_scale, self.bias, self.alpha, self.inv_beta, residual, s.taps, s.dilation,
                s.padding, self.x_scale, self.s_scale, self.res_scale, self.tile, self.s_fp8, self.fp8_acc)
        return torch.ops.vae_engines.fused_conv(
            x, self.weight, self.w_scale, self.bias, self.alpha, self.inv_beta, s.taps, s.dilation, s.padding,
            s.stride, self.x_scale, self.s_scale, s.store_y, s.audio, self.tile, self.s_fp8, self.fp8_acc)


def unit_call(first: FusedConv, second: FusedConv, x: torch.Tensor, stream: torch.Tensor,
              tile: list[int]) -> torch.Tensor:
    """A residual unit's k=7 layer `first` and k=1 layer `second` (into `stream` in place) as
    one op in `tile` (kernels.op.fused_unit_): the next layer's input."""
    a, b = first, second
    return torch.ops.vae_engines.fused_unit_(
        x, a.weight, a.w_scale, a.bias, a.alpha, a.inv_beta, b.weight, b.w_scale, b.bias, b.alpha, b.inv_beta,
        stream, a.spec.taps, a.spec.dilation, a.x_scale, b.x_scale, b.s_scale, b.res_scale, tile, b.s_fp8, a.fp8_acc)


class FusedDecoder(nn.Module):
    """float32 latent [B, C, T] -> float32 audio [B, A, T * hop] through fused convolutions.

    folded_decoder: model.oobleck.fold_decoder's; quant: layer name -> LayerQuant (absent:
    fp16); tiles: layer name -> kernels.op tile (absent: [], the torch implementation)."""

    def __init__(self, folded_decoder: nn.Module, quant: dict[str, LayerQuant] | None = None,
                 tiles: dict[str, list[int]] | None = None) -> None:
        super().__init__()
        if not getattr(folded_decoder, "_vae_engines_folded", False):
            raise ValueError("FusedDecoder takes a decoder folded by model.oobleck.fold_decoder")
        quant, tiles = quant or {}, tiles or {}
        specs = layer_specs(folded_decoder)
        none = LayerQuant()
        consumers = [quant.get(s.name, none) for s in specs[1:]] + [none]
        self.layers = nn.ModuleList(
            FusedConv(spec, folded_decoder, quant.get(spec.name, none), consumer, tiles.get(spec.name, []))
            for spec, consumer in zip(specs, consumers))
        self.latent_scale = float(quant.get(specs[0].name, none).input_scale)
        self.latent_dtype = torch.float8_e4m3fn if quant.get(specs[0].name, none).fp8 else torch.int8
        # per layer: the unit tile where this layer opens a residual unit that runs as one kernel
        self.unit_tiles = [list(tiles.get(unit_of(spec) or "", [])) for spec in specs]

    @property
    def int8_layers(self) -> list[str]:
        return [layer.spec.name for layer in self.layers if layer.x_scale > 0]

    @property
    def fp8_layers(self) -> list[str]:
        """The quantized layers whose operands are float8 e4m3fn (a subset of int8_layers' names)."""
        return [layer.spec.name for layer in self.layers
                if layer.x_scale > 0 and layer.weight.dtype == torch.float8_e4m3fn]

    @property
    def fused_units(self) -> list[str]:
        return [unit_of(layer.spec) for layer, tile in zip(self.layers, self.unit_tiles) if tile]

    def _unit(self, i: int, x: torch.Tensor, stream: torch.Tensor) -> torch.Tensor:
        """Layers i (k=7) and i + 1 (k=1, into `stream` in place) as one kernel: the next layer's input."""
        return unit_call(self.layers[i], self.layers[i + 1], x, stream, self.unit_tiles[i])

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = latent.float().transpose(1, 2)  # [B, T, C], channels-last like every activation after it
        x = quantize(x, self.latent_scale, self.latent_dtype) if self.latent_scale > 0 else x.to(torch.float16)
        x = x.contiguous()
        stream = x
        skip = False
        for i, layer in enumerate(self.layers):
            if skip:  # the k=1 convolution of a unit that ran as one kernel
                skip = False
                continue
            if self.unit_tiles[i]:
                x, skip = self._unit(i, x, stream), True
                continue
            if layer.spec.residual:
                x = layer(x, stream)
                continue
            y, x = layer(x)
            if layer.spec.audio:
                return y
            if layer.spec.store_y:
                stream = y
        raise ValueError("the decoder has no output convolution")
