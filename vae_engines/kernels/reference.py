"""What the fused convolution computes, in plain torch: the CPU implementation of the op, and
the cuDNN path on a GPU for a layer where cuDNN is faster than the Triton kernel.

One layer of the decoder, on channels-last activations x [B, T, C]:

    v = conv(x) (+ bias) (+ residual)          the layer's output, float32 inside
    y = v, stored (fp16; the decoder's audio in fp32, [B, C, T])
    s = Snake_next(fp16(v)), stored            the next layer's input: fp16, or int8
                                               quantized with that layer's scale

where conv is a k-tap dilated convolution with zero padding, or Oobleck's ConvTranspose as a
2-tap phase convolution (`phase_weight`); int8 x is dequantized with its per-tensor scale
and int8 weights with their per-output-channel scales; a quantized residual (the fused
placement's skip input) is rounded to int8 and back first. Rounding follows ONNX's
QuantizeLinear: round half to even, saturate to [-128, 127], zero point 0 -- the Q/DQ graphs'
own arithmetic (graph.execute), so an engine and its variant's graph quantize alike. FP8
(float8 e4m3fn: ONNX's FLOAT8E4M3FN, Hopper's e4m3) is quantized the same way with its own
saturation (+-448) and rounding to the nearest e4m3 value, ties to even (QuantizeLinear's
saturate=1).

A residual unit fused into one kernel (op.fused_unit_, kernels.triton_unit) computes its two
layers this way with one difference: nothing is stored between its k=7 convolution and its
quantizers, so its two Snakes (`unit_snake`) take the fp32 values and an int8 operand is
quantized from fp32, with no fp16 rounding before either -- what an engine that fuses Snake and
QuantizeLinear into the convolution's epilogue computes, where the Q/DQ graph's separate nodes
round to fp16 between them. 1-2% of its int8 codes land one step from the layers' (where a
half fp16 step, 2^-12 of the value, crosses a rounding boundary), its fp16 output is closer to
fp32; on the lent H100 its INT8 engines decoded held-out latents within 0.01 dB of the layer
arithmetic's and, shipped, 4% faster (benchmarks/results/README.md, "Fewer roundings in the unit").

On the CPU the arithmetic is fp32 on the stored (fp16 / int8) values; on a GPU the
convolution runs in fp16 on cuDNN (channels-last 2-D, fp32 accumulation).
"""

from __future__ import annotations

from typing import Any

from vae_engines.core.choices import FP8_MAX
from vae_engines.core.lazy import lazy_import

torch = lazy_import("torch")


def conv_weight(weight: Any) -> Any:
    """A Conv1d weight [N, C, k] as the kernel's K-major matrix [N, k * C] (tap, then channel)."""
    return weight.permute(0, 2, 1).reshape(weight.shape[0], -1).contiguous()


def phase_weight(weight: Any, stride: int) -> Any:
    """A ConvTranspose1d weight [C, C_out, 2 * stride] (padding stride / 2, even stride) as the
    2-tap convolution matrix [stride * C_out, 2 * C]: column r * C_out + o is output channel o
    at phase r; its tap t reads input frame q - 1 + t (+1 for r >= stride / 2) and uses the
    transposed kernel's tap j = r + stride/2 + (1 - t - [r >= stride/2]) * stride."""
    channels, out_channels, width = weight.shape
    if width != 2 * stride or stride % 2:
        raise ValueError(f"ConvTranspose1d with kernel {width} and stride {stride}: the fused kernel takes "
                         "kernel = 2 x stride with an even stride (Oobleck's upsamplers)")
    half = stride // 2
    taps = []
    for tap in (0, 1):
        j = [r + half + (1 - tap - (r >= half)) * stride for r in range(stride)]
        taps.append(weight[:, :, j].permute(2, 1, 0))  # [stride, C_out, C]
    return torch.stack(taps, dim=2).reshape(stride * out_channels, 2 * channels).contiguous()




def quantize(x: Any, scale: float, dtype: Any = None) -> Any:
    """ONNX QuantizeLinear (zero point 0) in fp32 arithmetic: to int8 (the default), or to
    float8 e4m3fn where dtype is torch.float8_e4m3fn (saturating)."""
    if dtype is not None and dtype != torch.int8:
        return (x.float() / scale).clamp_(-FP8_MAX, FP8_MAX).to(dtype)
    return torch.round(x.float() / scale).clamp_(-128, 127).to(torch.int8)


def is_quantized(t: Any) -> bool:
    """int8 or float8: a tensor that carries a scale beside it."""
    return t.dtype in (torch.int8, torch.float8_e4m3fn)


def _conv(a: Any, w: Any, *, taps: int, dilation: int, padding: int, stride: int) -> Any:
    """a [B, T, C] (*) w [N, taps * C] -> [B, T, N], as a channels-last 2-D convolution."""
    batch, frames, channels = a.shape
    n = w.shape[0]
    x4 = a.permute(0, 2, 1).unsqueeze(2).contiguous(memory_format=torch.channels_last)
    w4 = w.view(n, taps, channels).permute(0, 2, 1).unsqueeze(2).contiguous(memory_format=torch.channels_last)
    if stride:
        out = torch.nn.functional.conv2d(x4, w4, padding=(0, 1))  # frames + 1 columns: taps (q-1, q) and (q, q+1)
        out = torch.cat([out[:, : n // 2, :, :frames], out[:, n // 2:, :, 1:]], dim=1)
    else:
        out = torch.nn.functional.conv2d(x4, w4, padding=(0, padding), dilation=(1, dilation))
    return out.squeeze(2).permute(0, 2, 1)


def layer_output(x: Any, weight: Any, w_scale: Any, bias: Any, residual: Any, *, taps: int, dilation: int,
                 padding: int, stride: int, x_scale: float, res_scale: float) -> Any:
    """v: the layer's float32 output [B, T_out, C_out] (module docstring)."""
    compute = torch.float16 if x.is_cuda else torch.float32
    a = x.float() * x_scale if is_quantized(x) else x
    w = weight.float() * w_scale[:, None] if is_quantized(weight) else weight
    v = _conv(a.to(compute), w.to(compute), taps=taps, dilation=dilation, padding=padding, stride=stride).float()
    batch, frames, n = v.shape
    if stride:
        v = v.reshape(batch, frames * stride, n // stride)
    if bias is not None:
        v = v + bias
    if residual is not None:
        r = residual.float()
        if res_scale > 0:
            r = (quantize(r, res_scale).float() * res_scale).half().float()
        v = v + r
    return v


def _snake(h: Any, alpha: Any, inv_beta: Any) -> Any:
    sn = torch.sin(alpha * h)
    return h + inv_beta * (sn * sn)


def snake_input(v: Any, alpha: Any, inv_beta: Any, s_scale: float, s_dtype: Any = None) -> Any:
    """The next layer's input: Snake of the stored fp16 value, in fp16 or quantized (int8,
    or s_dtype) with s_scale."""
    s = _snake(v.half().float(), alpha, inv_beta)
    return quantize(s.half().float(), s_scale, s_dtype) if s_scale > 0 else s.half()


def unit_snake(v: Any, alpha: Any, inv_beta: Any, s_scale: float, s_dtype: Any = None) -> Any:
    """snake_input inside a fused residual unit (module docstring): Snake of the fp32 value, in
    fp32, to fp16 or quantized (int8, or s_dtype) with s_scale straight from fp32."""
    s = _snake(v.float(), alpha, inv_beta)
    return quantize(s, s_scale, s_dtype) if s_scale > 0 else s.half()
