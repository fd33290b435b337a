"""The fused convolution as PyTorch custom ops, so torch.export, torch.compile and the engine
packages see one op per decoder layer.

- `vae_engines::fused_conv` -> (y, s): a layer whose output starts a new stream (the first
  convolution, a ConvTranspose, a residual unit's k=7 convolution, the last convolution).
- `vae_engines::fused_conv_residual_` -> s: a residual unit's k=1 convolution, which adds its
  result into the residual stream `residual` in place (declared: mutates_args), so a 60 s
  decode holds three full-width activations at a time instead of four.
- `vae_engines::fused_unit_` -> s: a whole residual unit (the k=7 convolution, its Snake, the
  k=1 convolution into the residual stream in place, the next Snake) with the k=7 output kept
  on chip (kernels.triton_unit): for units of up to 256 channels. Its Snakes work on fp32
  values (kernels.reference.unit_snake): UNIT_VS_LAYERS bounds how far it is from the two layers.

`tile` chooses the implementation: (BM, BN, BK, warps, stages) runs the Triton kernel
(kernels.triton_conv) -- on a GPU, or on the CPU under Triton's interpreter
(TRITON_INTERPRET=1); for the audio layer, (BM, 0, BK, warps, stages, programs per
multiprocessor) -- BN 0 -- runs kernels.triton_outconv, which reads the input once instead of
once per tap; an empty tile runs kernels.reference (the CPU implementation, and cuDNN on a
GPU). The engine build picks one per layer by timing both (compiled.tune).
Absent outputs come back as empty tensors.

TOLERANCES is what the implementations promise against each other (tests read it): both
round the same fp16 / int8 operands and accumulate in fp32 / exactly, so they differ by
summation order, i.e. by at most a couple of fp16 rounding steps of the stored values, and
an int8 output lands in the neighbouring step only where its value sits within that of a
rounding boundary.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from vae_engines.core.lazy import lazy_import
from vae_engines.kernels import reference

triton_conv = lazy_import("vae_engines.kernels.triton_conv")  # imports Triton: only where a kernel runs
triton_unit = lazy_import("vae_engines.kernels.triton_unit")
triton_outconv = lazy_import("vae_engines.kernels.triton_outconv")

TOLERANCES = {
    # fp16 outputs: |a - b| <= rtol * |b| + atol (a couple of fp16 steps: 2^-10 relative)
    "fp16": {"rtol": 4e-3, "atol": 4e-3},
    # int8 outputs: codes differ by at most 1, in at most this share of the elements
    "int8": {"max_step": 1, "max_share": 0.01},
    # float8 e4m3fn outputs: by at most one e4m3 step of the value (1/8 of it) plus `floor` (in codes:
    # the reference's value / scale), in at most this share
    "fp8": {"max_share": 0.01, "floor": 2.0 ** -9},
}
# A fused unit against its two layers run apart (kernels.reference's docstring): its Snakes skip
# the fp16 rounding of their input and output, up to half an fp16 step (2^-12) of a value each,
# so an int8 code t moves by one step only where that (times Snake's slope, near 1) crosses a
# rounding boundary: about |t| * 2^-11 of the elements, 1/16 at the largest codes (measured:
# 0.6-2.2% on the test models, 1.3% on the full-size decoder). Its residual stream moves where
# its k=1 layer's operand did.
# An fp8 operand code that moves is up to 1/8 of its value, against int8's 1/127 of the range, so the
# next layer's fp8 codes near zero move by the stream's change over several of their fine steps:
# within one step of the value plus 1 (1/448 of e4m3's range; int8 allows 1/127), in at most 1/16 of
# them (measured on the test models: 0.35-1.25% move, 0.03-0.1% by more than one step of the value).
UNIT_VS_LAYERS = {"fp16": {"rtol": 1e-2, "atol": 1e-2}, "int8": {"max_step": 1, "max_share": 1 / 16},
                  "fp8": {"max_share": 1 / 16, "floor": 1.0}}


# A residual unit runs as one kernel only where one program holds all its channels: an
# [rows, channels] fp32 accumulator must fit a multiprocessor's registers (kernels.triton_unit).
UNIT_MAX_CHANNELS = 256
# Accumulator values a thread may hold at up to 8 warps (half the 255 registers a thread can
# have; at 16 warps a thread has 128 registers, so 64): the tiles within it compile for sm_90
# without spills (benchmarks/results/gpu_units/sm90_unit.json), 256 x 256 over 16 warps does not.
UNIT_ACCUMULATOR_REGISTERS = 128


def unit_fits(channels: int, tile: list[int] | tuple[int, ...]) -> str | None:
    """Why `tile` (BM, BK, BN2, warps, stages) cannot run a fused unit of `channels`
    channels, or None where it can."""
    bm, bk, bn2, warps, *_ = tile
    if channels > UNIT_MAX_CHANNELS or channels & (channels - 1):
        return f"a fused unit takes a power of two up to {UNIT_MAX_CHANNELS} channels, not {channels}"
    if channels % bk or channels % bn2:
        return f"tile BK={bk} / BN2={bn2} does not divide the unit's {channels} channels"
    per_thread = bm * channels // (32 * warps)
    if per_thread > UNIT_ACCUMULATOR_REGISTERS // max(1, warps // 8):
        return (f"tile {bm} rows x {channels} channels over {warps} warps holds {per_thread} accumulator values a "
                f"thread, more than its registers allow (spills)")
    return None


OUTCONV_COLUMNS = 16  # kernels.triton_outconv's GEMM width: taps * 2 channels (14) padded to the MMA's


def outconv_fits(n: int, taps: int, padding: int, dilation: int, channels: int, bk: int) -> str | None:
    """Why kernels.triton_outconv cannot run a layer, or None: it takes the audio layer's shape
    (an undilated 'same' convolution whose taps x output channels fit OUTCONV_COLUMNS)."""
    if dilation != 1 or padding != taps // 2 or taps * n > OUTCONV_COLUMNS:
        return (f"the output-convolution kernel takes an undilated 'same' convolution of at most "
                f"{OUTCONV_COLUMNS} taps x channels")
    if channels % bk:
        return f"tile BK={bk} does not divide the {channels} input channels"
    return None


def registered() -> tuple[str, ...]:
    """The ops this module registers (importing it registers them: a package that holds them
    loads only after that)."""
    return ("vae_engines::fused_conv", "vae_engines::fused_conv_residual_", "vae_engines::fused_unit_")


def _shapes(x: Tensor, weight: Tensor, stride: int) -> tuple[int, int, int, int]:
    batch, frames, _ = x.shape
    n = weight.shape[0]
    return batch, frames * stride if stride else frames, n // stride if stride else n, n


FP8 = torch.float8_e4m3fn


def _fp8_acc(fp8_acc: int) -> int | None:
    """The ops' fp8_acc (products Hopper's tensor cores add in their reduced-precision fp8 sums
    before a promotion to fp32; -1: once per K slice, the kernels' default; 0: never) as the
    kernels' launch takes it."""
    return None if fp8_acc < 0 else fp8_acc


def _s_dtype(s_scale: float, s_fp8: bool) -> torch.dtype:
    """The next layer's input type: fp16, or int8 / float8 e4m3fn where it is quantized."""
    return (FP8 if s_fp8 else torch.int8) if s_scale > 0 else torch.float16


def _snake_out(x: Tensor, batch: int, frames: int, channels: int, s_scale: float, s_fp8: bool = False) -> Tensor:
    return x.new_empty((batch, frames, channels), dtype=_s_dtype(s_scale, s_fp8))


def _layer_outputs(x: Tensor, weight: Tensor, stride: int, store_y: bool, audio: bool, snake: bool,
                   s_scale: float, s_fp8: bool = False) -> tuple[Tensor | None, Tensor | None]:
    """fused_conv's (y, s), allocated, None where not produced: shared by the Triton path
    and the fake implementation, so export sees exactly what runs."""
    batch, frames, channels, _ = _shapes(x, weight, stride)
    y = None
    if store_y:
        y = x.new_empty((batch, channels, frames) if audio else (batch, frames, channels),
                        dtype=torch.float32 if audio else torch.float16)
    return y, (_snake_out(x, batch, frames, channels, s_scale, s_fp8) if snake else None)


def is_outconv(tile: list[int] | tuple[int, ...]) -> bool:
    """A tile of kernels.triton_outconv (BN 0), not of the layer kernel."""
    return len(tile) == 6 and tile[1] == 0


def _triton(x, weight, w_scale, bias, alpha, inv_beta, y, s, **kw) -> None:
    if is_outconv(kw["tile"]):
        bm, _, bk, warps, stages, per_sm = kw["tile"]
        triton_outconv.launch(x.contiguous(), weight, w_scale, bias, y, taps=kw["taps"], padding=kw["padding"],
                              x_scale=kw["x_scale"], tile=(bm, bk, warps, stages, per_sm))
        return
    batch, rows = x.shape[0], x.shape[1]
    n = weight.shape[0]
    y_view = None if y is None or kw.get("audio") else y.view(batch, rows, n)
    s_view = None if s is None else s.view(batch, rows, n)
    triton_conv.launch(x.contiguous(), weight, w_scale, bias, alpha, inv_beta, y if y_view is None else y_view, s_view,
                       **kw)


@torch.library.custom_op("vae_engines::fused_conv", mutates_args=())
def fused_conv(x: Tensor, weight: Tensor, w_scale: Optional[Tensor], bias: Optional[Tensor], alpha: Optional[Tensor],
               inv_beta: Optional[Tensor], taps: int, dilation: int, padding: int, stride: int, x_scale: float,
               s_scale: float, store_y: bool, audio: bool, tile: list[int], s_fp8: bool = False,
               fp8_acc: int = -1) -> tuple[Tensor, Tensor]:
    """One layer (module docstring). x [B, T, C] (int8 or float8 e4m3fn when x_scale > 0, its
    weight the same); y [B, T_out, C_out] fp16, or when `audio` float32 [B, C_out, T_out]; s [B,
    T_out, C_out] when alpha is given, quantized with s_scale > 0 to int8 (float8 where s_fp8);
    fp8_acc: where x is float8, how often its sums are promoted (_fp8_acc)."""
    empty = x.new_empty((0,), dtype=torch.float16)
    if tile:
        y, s = _layer_outputs(x, weight, stride, store_y, audio, alpha is not None, s_scale, s_fp8)
        _triton(x, weight, w_scale, bias, alpha, inv_beta, y, s, taps=taps, dilation=dilation, padding=padding,
                stride=stride, x_scale=x_scale, s_scale=s_scale, res_scale=0.0, residual=False, audio=audio,
                tile=tuple(tile), fp8_acc=_fp8_acc(fp8_acc))
        return (empty if y is None else y), (empty if s is None else s)
    v = reference.layer_output(x, weight, w_scale, bias, None, taps=taps, dilation=dilation, padding=padding,
                               stride=stride, x_scale=x_scale, res_scale=0.0)
    y = empty
    if store_y:
        y = v.transpose(1, 2).contiguous() if audio else v.half()
    s = reference.snake_input(v, alpha, inv_beta, s_scale, _s_dtype(s_scale, s_fp8)) if alpha is not None else empty
    return y, s


@fused_conv.register_fake
def _(x, weight, w_scale, bias, alpha, inv_beta, taps, dilation, padding, stride, x_scale, s_scale, store_y, audio,
      tile, s_fp8=False, fp8_acc=-1):
    empty = x.new_empty((0,), dtype=torch.float16)
    y, s = _layer_outputs(x, weight, stride, store_y, audio, alpha is not None, s_scale, s_fp8)
    return (empty if y is None else y), (empty if s is None else s)


@torch.library.custom_op("vae_engines::fused_conv_residual_", mutates_args=("residual",))
def fused_conv_residual_(x: Tensor, weight: Tensor, w_scale: Optional[Tensor], bias: Optional[Tensor],
                         alpha: Optional[Tensor], inv_beta: Optional[Tensor], residual: Tensor, taps: int,
                         dilation: int, padding: int, x_scale: float, s_scale: float, res_scale: float,
                         tile: list[int], s_fp8: bool = False, fp8_acc: int = -1) -> Tensor:
    """residual += conv(x) (+ bias), in place; returns s = Snake(residual) when alpha is
    given (else an empty tensor). res_scale > 0: the residual is read through int8 Q/DQ."""
    batch, frames, channels, _ = _shapes(x, weight, 0)
    if tile:
        s = _snake_out(x, batch, frames, channels, s_scale, s_fp8) if alpha is not None else None
        _triton(x, weight, w_scale, bias, alpha, inv_beta, residual, s, taps=taps, dilation=dilation,
                padding=padding, stride=0, x_scale=x_scale, s_scale=s_scale, res_scale=res_scale, residual=True,
                audio=False, tile=tuple(tile), fp8_acc=_fp8_acc(fp8_acc))
        return x.new_empty((0,), dtype=torch.float16) if s is None else s
    v = reference.layer_output(x, weight, w_scale, bias, residual, taps=taps, dilation=dilation, padding=padding,
                               stride=0, x_scale=x_scale, res_scale=res_scale)
    residual.copy_(v)
    if alpha is None:
        return x.new_empty((0,), dtype=torch.float16)
    return reference.snake_input(v, alpha, inv_beta, s_scale, _s_dtype(s_scale, s_fp8))


@fused_conv_residual_.register_fake
def _(x, weight, w_scale, bias, alpha, inv_beta, residual, taps, dilation, padding, x_scale, s_scale, res_scale,
      tile, s_fp8=False, fp8_acc=-1):
    batch, frames, channels, _ = _shapes(x, weight, 0)
    if alpha is None:
        return x.new_empty((0,), dtype=torch.float16)
    return _snake_out(x, batch, frames, channels, s_scale, s_fp8)


@torch.library.custom_op("vae_engines::fused_unit_", mutates_args=("residual",))
def fused_unit_(x: Tensor, w1: Tensor, w1_scale: Optional[Tensor], b1: Optional[Tensor], alpha1: Tensor,
                inv_beta1: Tensor, w2: Tensor, w2_scale: Optional[Tensor], b2: Optional[Tensor],
                alpha2: Optional[Tensor], inv_beta2: Optional[Tensor], residual: Tensor, taps: int, dilation: int,
                x_scale: float, mid_scale: float, s_scale: float, res_scale: float, tile: list[int],
                s_fp8: bool = False, fp8_acc: int = -1) -> Tensor:
    """One residual unit: residual += conv2(Snake1(conv1(x))) in place; returns s =
    Snake2(residual) when alpha2 is given (else an empty tensor). conv1 has `taps` taps at
    `dilation` (padding keeps the length), conv2 one; mid_scale > 0: conv2 is int8 and its
    input is quantized with that scale (to w2's type, int8 or float8 e4m3fn); the other arguments
    as fused_conv_residual_'s."""
    batch, frames, channels, _ = _shapes(x, w1, 0)
    if tile:
        s = _snake_out(x, batch, frames, channels, s_scale, s_fp8) if alpha2 is not None else None
        triton_unit.launch(x.contiguous(), w1, w1_scale, b1, alpha1, inv_beta1, w2, w2_scale, b2, alpha2, inv_beta2,
                           residual, s, taps=taps, dilation=dilation, x_scale=x_scale, mid_scale=mid_scale,
                           s_scale=s_scale, res_scale=res_scale, tile=tuple(tile), fp8_acc=_fp8_acc(fp8_acc))
        return x.new_empty((0,), dtype=torch.float16) if s is None else s
    v = reference.layer_output(x, w1, w1_scale, b1, None, taps=taps, dilation=dilation,
                               padding=(taps // 2) * dilation, stride=0, x_scale=x_scale, res_scale=0.0)
    mid = reference.unit_snake(v, alpha1, inv_beta1, mid_scale, w2.dtype if reference.is_quantized(w2) else None)
    v = reference.layer_output(mid, w2, w2_scale, b2, residual, taps=1, dilation=1, padding=0, stride=0,
                               x_scale=mid_scale, res_scale=res_scale)
    residual.copy_(v)
    if alpha2 is None:
        return x.new_empty((0,), dtype=torch.float16)
    return reference.unit_snake(v, alpha2, inv_beta2, s_scale, _s_dtype(s_scale, s_fp8))


@fused_unit_.register_fake
def _(x, w1, w1_scale, b1, alpha1, inv_beta1, w2, w2_scale, b2, alpha2, inv_beta2, residual, taps, dilation, x_scale,
      mid_scale, s_scale, res_scale, tile, s_fp8=False, fp8_acc=-1):
    batch, frames, channels, _ = _shapes(x, w1, 0)
    if alpha2 is None:
        return x.new_empty((0,), dtype=torch.float16)
    return _snake_out(x, batch, frames, channels, s_scale, s_fp8)
