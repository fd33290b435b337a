"""A whole residual unit as one Triton kernel, where its channels fit one program's tile.

Oobleck's residual unit, as the fused engines run it (model.fused), is two layers:

    s1 = Snake2(conv1(s))                  k=7, dilated; s1 written to memory
    y += conv2(s1); s = Snake_next(y)      k=1; y the residual stream, in place

One program of this kernel computes BM rows (time) of the unit over all C channels: the k=7
implicit GEMM into an on-chip accumulator [BM, C], its epilogue (dequantize, bias, Snake2,
and the int8 quantization with conv2's calibrated input scale where conv2 is int8), then the
k=1 GEMM straight from that tile, in column chunks of BN2, each with kernels.triton_conv's
epilogue (bias, the quantized skip of the fused placement, the residual add in place, the
next layer's Snake and quantization). s1 never reaches memory: at block 4 of a 60 s decode
(C = 128, 2.88 M rows) that is 0.74 GB written and read back per unit in fp16, 0.37 GB in
int8. The arithmetic is the two layers' own, step by step, except that both Snakes take the
fp32 value and feed the quantizer (or the fp16 operand) without rounding to fp16 first: no
tensor is stored there (kernels.reference.unit_snake; op.UNIT_VS_LAYERS bounds the
difference). Those roundings were 6 of the int8 unit's 38 machine instructions per output
element on sm_90; without them INT8 engines decoded 4% faster on the lent H100, held-out
quality within 0.01 dB (benchmarks/results/README.md, "Fewer roundings in the unit").

The condition is the one CUTLASS's back-to-back GEMM fusion (its example 13) states: the first
GEMM's N must fit one threadblock tile, because the second GEMM needs every channel of a row.
Here that holds for C <= 256 (blocks 2-4 of ACE-Step's decoder); the 512- and 1024-channel
units would need an [BM, C] fp32 accumulator that does not fit one multiprocessor's registers.

Tiles are (BM, BK, BN2, warps, stages): BK the k=7 GEMM's channel slice per load, BN2 the
k=1 GEMM's column chunk. Like the layer kernel the sequence length is no compile-time
constant, and the operands and outputs pass through tensor descriptors (TMA on Hopper),
which fill rows outside the sequence with zeros: the k=7 convolution's padding.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from vae_engines.core.lazy import lazy_import
from vae_engines.kernels import inflight
from vae_engines.kernels.op import unit_fits
from vae_engines.kernels.triton_conv import _quantize, _quantize_fp8, _quantize_int8, _sin

torch = lazy_import("torch")


@triton.jit
def _snake(v, alpha_ptr, inv_beta_ptr, ch, FAST_SIN: tl.constexpr):
    """Snake of v, in fp32 (kernels.reference.unit_snake)."""
    sn = _sin(v * tl.load(alpha_ptr + ch)[None, :], FAST_SIN)
    return v + tl.load(inv_beta_ptr + ch)[None, :] * (sn * sn)


@triton.jit
def _dot(a, w, acc, INT8: tl.constexpr, FP8_ACC: tl.constexpr):
    """acc + a @ w.T: int8 into int32 (exact), fp8 with Hopper's reduced-precision sums promoted to
    fp32 every FP8_ACC products (0: never), fp16 into fp32."""
    if INT8:  # one return, every branch assigning: compiled Triton types a function's returns alike
        acc = tl.dot(a, w.T, acc, out_dtype=tl.int32)
    elif FP8_ACC > 0:
        acc = tl.dot(a, w.T, acc, max_num_imprecise_acc=FP8_ACC)
    else:
        acc = tl.dot(a, w.T, acc)
    return acc


@triton.jit
def _conv1_snake(x_desc, w1_desc, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, b, row0, DIL, x_scale,
                 inv_mid_scale, C: tl.constexpr, TAPS: tl.constexpr, INT8_1: tl.constexpr, INT8_2: tl.constexpr,
                 HAS_B1: tl.constexpr, FAST_SIN: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
                 FP8_1: tl.constexpr, FP8_2: tl.constexpr, FP8_ACC: tl.constexpr):
    """The k=7 layer on chip: its [BM, C] output through Snake2, as the k=1 layer's operand
    (fp16, or int8 / fp8 quantized with that layer's input scale)."""
    ch = tl.arange(0, C)
    if INT8_1:
        acc = tl.zeros((BM, C), dtype=tl.int32)
    else:
        acc = tl.zeros((BM, C), dtype=tl.float32)
    num_kc = C // BK
    for kk in tl.range(0, TAPS * num_kc):
        tap = kk // num_kc
        c0 = (kk - tap * num_kc) * BK
        a = x_desc.load([b, row0 + tap * DIL, c0]).reshape(BM, BK)
        acc = _dot(a, w1_desc.load([0, tap * C + c0]), acc, INT8_1, FP8_ACC if FP8_1 else 0)
    v = acc.to(tl.float32)
    if INT8_1 or FP8_1:
        v = v * (tl.load(w1_scale_ptr + ch) * x_scale)[None, :]
    if HAS_B1:
        v += tl.load(b1_ptr + ch)[None, :]
    s1 = _snake(v, alpha1_ptr, inv_beta1_ptr, ch, FAST_SIN)
    if INT8_2:  # one return: Triton types every return of a function alike, constexpr branches included
        mid = _quantize_int8(s1, inv_mid_scale)
    elif FP8_2:
        mid = _quantize_fp8(s1, inv_mid_scale, FAST_SIN)
    else:
        mid = s1.to(tl.float16)
    return mid


@triton.jit(do_not_specialize=["M", "DIL"])
def residual_unit_kernel(
        x_desc, w1_desc, w2_desc, y_desc, s_desc, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr,
        w2_scale_ptr, b2_ptr, alpha2_ptr, inv_beta2_ptr,
        M, DIL, x_scale, inv_mid_scale, mid_scale, inv_s_scale, res_scale,
        C: tl.constexpr, TAPS: tl.constexpr, INT8_1: tl.constexpr, INT8_2: tl.constexpr, HAS_B1: tl.constexpr,
        HAS_B2: tl.constexpr, RES_QUANT: tl.constexpr, STORE_S: tl.constexpr, S_INT8: tl.constexpr,
        FAST_SIN: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, BN2: tl.constexpr,
        FP8_1: tl.constexpr = False, FP8_2: tl.constexpr = False, S_FP8: tl.constexpr = False,
        FP8_ACC: tl.constexpr = 0, INFLIGHT: tl.constexpr = False):
    # INFLIGHT: compiled with kernels.inflight's rewrite (int8 on sm_90); the constexpr keeps it apart in caches
    b = tl.program_id(1)
    m0 = tl.program_id(0) * BM
    mid = _conv1_snake(x_desc, w1_desc, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, b, m0 - (TAPS // 2) * DIL,
                       DIL, x_scale, inv_mid_scale, C, TAPS, INT8_1, INT8_2, HAS_B1, FAST_SIN, BM, BK, FP8_1, FP8_2,
                       FP8_ACC)
    # the k=1 layer from the tile, BN2 columns at a time, each with the residual epilogue
    for n0 in tl.static_range(0, C, BN2):
        w2 = w2_desc.load([n0, 0])
        cols = n0 + tl.arange(0, BN2)
        if INT8_2 or FP8_2:
            zero = tl.zeros((BM, BN2), dtype=tl.int32 if INT8_2 else tl.float32)
            v = _dot(mid, w2, zero, INT8_2, FP8_ACC if FP8_2 else 0).to(tl.float32)
            v = v * (tl.load(w2_scale_ptr + cols) * mid_scale)[None, :]
        else:
            v = tl.dot(mid, w2.T)
        if HAS_B2:
            v += tl.load(b2_ptr + cols)[None, :]
        r = y_desc.load([b, m0, n0]).reshape(BM, BN2).to(tl.float32)
        if RES_QUANT:  # the skip input's Q/DQ of the fused placement
            r = (_quantize(r, 1.0 / res_scale) * res_scale).to(tl.float16).to(tl.float32)
        v += r
        y_desc.store([b, m0, n0], v.to(tl.float16).reshape(1, BM, BN2))
        if STORE_S:
            s = _snake(v, alpha2_ptr, inv_beta2_ptr, cols, FAST_SIN)
            if S_INT8:
                s_desc.store([b, m0, n0], _quantize_int8(s, inv_s_scale).reshape(1, BM, BN2))
            elif S_FP8:
                s_desc.store([b, m0, n0], _quantize_fp8(s, inv_s_scale, FAST_SIN).reshape(1, BM, BN2))
            else:
                s_desc.store([b, m0, n0], s.to(tl.float16).reshape(1, BM, BN2))


def _desc(t: Any, block: list[int]) -> TensorDescriptor:
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block)


def launch(x: Any, w1: Any, w1_scale: Any, b1: Any, alpha1: Any, inv_beta1: Any, w2: Any, w2_scale: Any, b2: Any,
           alpha2: Any, inv_beta2: Any, y: Any, s: Any, *, taps: int, dilation: int, x_scale: float,
           mid_scale: float, s_scale: float, res_scale: float, tile: tuple[int, ...],
           fp8_acc: int | None = None) -> None:
    """Run the kernel. x: [B, M, C] contiguous, fp16 (x_scale 0), int8 or float8 e4m3fn; w1 [C,
    taps * C] and w2 [C, C] K-major, of their input's type (w2's is the k=1 layer's operand's: int8
    or float8 e4m3fn with mid_scale > 0); y: the residual stream [B, M, C] fp16, updated in place;
    s: [B, M, C] (int8 or float8 e4m3fn, quantized with s_scale > 0) or None. fp8_acc: as
    kernels.triton_conv.launch's (None: every BK products)."""
    batch, rows, channels = x.shape
    bm, bk, bn2, warps, stages = tile
    fp8 = torch.float8_e4m3fn
    why = unit_fits(channels, tile)
    if why:
        raise ValueError(why)
    x_desc = _desc(x, [1, bm, bk])
    w1_desc = _desc(w1, [channels, bk])
    w2_desc = _desc(w2, [bn2, channels])
    y_desc = _desc(y, [1, bm, bn2])
    s_desc = _desc(s, [1, bm, bn2]) if s is not None else y_desc
    grid = (triton.cdiv(rows, bm), batch)
    keep = x.is_cuda and x.dtype == torch.int8 and inflight.enabled()
    with inflight.rewriting(keep):
        residual_unit_kernel[grid](
            x_desc, w1_desc, w2_desc, y_desc, s_desc,
            w1_scale if w1_scale is not None else w1, b1 if b1 is not None else w1, alpha1, inv_beta1,
            w2_scale if w2_scale is not None else w2, b2 if b2 is not None else w2,
            alpha2 if alpha2 is not None else alpha1, inv_beta2 if inv_beta2 is not None else inv_beta1,
            rows, dilation, float(x_scale), 1.0 / mid_scale if mid_scale > 0 else 0.0, float(mid_scale),
            1.0 / s_scale if s_scale > 0 else 0.0, float(res_scale),
            C=channels, TAPS=taps, INT8_1=x.dtype == torch.int8, INT8_2=mid_scale > 0 and w2.dtype == torch.int8,
            HAS_B1=b1 is not None, HAS_B2=b2 is not None, RES_QUANT=res_scale > 0, STORE_S=s is not None,
            S_INT8=s is not None and s_scale > 0 and s.dtype == torch.int8, FAST_SIN=x.is_cuda, BM=bm, BK=bk, BN2=bn2,
            FP8_1=x.dtype == fp8, FP8_2=mid_scale > 0 and w2.dtype == fp8,
            S_FP8=s is not None and s_scale > 0 and s.dtype == fp8, FP8_ACC=bk if fp8_acc is None else fp8_acc,
            INFLIGHT=keep, num_warps=warps, num_stages=stages)
