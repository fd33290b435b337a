"""The fused convolution as a Triton kernel; kernels.reference says what it computes.

One program computes a [BM, BN] tile of output rows (time) by GEMM columns (output
channels) as an implicit GEMM: for each tap and BK-wide channel slice it loads the input
rows shifted by tap * dilation - padding and multiplies them with the K-major weight slice
on the tensor cores, accumulating in fp32 (fp16 operands) or int32 (int8 operands: exact).
Both operands come through tensor descriptors: on Hopper the tensor memory accelerator
(TMA) copies them into shared memory asynchronously, several stages ahead, and fills rows
outside the sequence with zeros -- exactly the convolution's zero padding. The epilogue does
in registers what eager PyTorch does in separate passes over the tensor: dequantize (int8),
add the bias, add into the residual stream in place, store, and apply the Snake of the layer
that consumes the result, writing that layer's input -- in fp16, or quantized to int8 with
its calibrated scale; its tiles too are read and written through descriptors. (The first
version used pointer loads and stores: per-element addresses and masks held 245-255
registers per thread and spilled, ptxas for sm_90, and its layers took 2.3-3.1x the
descriptor version's time on the H200 -- with CUDA's accurate sinf still in it, see _sin;
benchmarks/results/README.md.)

Why Snake at the producer and not on the consumer's load (a reasoned choice, not a measured
one): a k=7 convolution loads each input element once per tap and per BN-wide column block,
so Snake on load costs 7 x N / BN sines per element -- at BN = 128 one sine per 256
tensor-core FLOPs, about the rate of the GPU's special-function units -- where the
producer's epilogue computes it once per element. An int8 consumer then also reads int8,
half the bytes, already quantized.

ConvTranspose (stride s, kernel 2s, padding s/2: Oobleck's upsamplers) runs as a 2-tap
convolution with s * C_out columns (kernels.reference.phase_weight): output frame q*s + r
takes input frames (q-1, q) for phases r < s/2 and (q, q+1) for the rest, so the column
blocks of the second half read their taps one frame later, and the [T, s * C_out] result is
already the [T * s, C_out] channels-last output in memory.

The sequence length is never a compile-time constant (do_not_specialize): one compiled
kernel serves every length, and a call at a new length compiles nothing.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from vae_engines.core.lazy import lazy_import
from vae_engines.kernels import inflight

torch = lazy_import("torch")


@triton.jit
def _rounding_sum(x, inv_scale):
    """ONNX QuantizeLinear to int8 with zero point 0, up to its last step: x / scale (as
    x * (1 / scale): the two differ in the last bit, which moves a value across a rounding
    boundary about 3 times in 10^5), saturated to [-128, 127], plus 1.5 * 2^23 -- which rounds
    it half to even (exact in fp32 for |t| < 2^22; the clamp comes first, so no multiply-add
    can fuse into the rounding)."""
    return tl.minimum(tl.maximum(x * inv_scale, -128.0), 127.0) + 12582912.0


@triton.jit
def _quantize(x, inv_scale):
    """ONNX QuantizeLinear to int8 with zero point 0, as a float in [-128, 127] (_rounding_sum)."""
    return _rounding_sum(x, inv_scale) - 12582912.0


@triton.jit
def _quantize_int8(x, inv_scale):
    """_quantize(x, inv_scale) as int8, read off the bits of the rounding sum: t + 1.5 * 2^23 is
    the float whose bits are 0x4B400000 + t for integral |t| < 2^22, so its low byte is t in
    two's complement. No float-to-integer conversion runs: on sm_90 that (F2I) issues at 16 per
    clock per multiprocessor, the sine's rate, against 128 for fp32 FMAs, and an int8 residual
    unit did two per element of its output. With floor's FRND gone from _sin too, an int8 unit
    decoded 60 s 1.43x faster on the H100 (benchmarks/results/README.md, "The epilogue")."""
    return _rounding_sum(x, inv_scale).to(tl.int32, bitcast=True).to(tl.int8)


@triton.jit
def _quantize_fp8(x, inv_scale, FAST: tl.constexpr = False):
    """ONNX QuantizeLinear to float8 e4m3fn (saturate=1): x / scale clamped to +-448 and
    rounded to the nearest e4m3 value, ties to even, as float8. FAST (a GPU): the hardware's
    conversion (sm_90 cvt.rn.satfinite.e4m3x2.f32, two values an instruction), which rounds and
    saturates the same way. Otherwise the rounding is done in fp32 (the value's binade from its
    exponent bits, 3 mantissa bits kept by adding and subtracting 1.5 * 2^23 at that step;
    subnormals at 2^-9) so that the conversion that follows is exact: Triton's interpreter
    converts fp32 -> e4m3 wrongly where rounding carries into the next binade (1.98 -> 1.0),
    which this test-visible path avoids; compiled for sm_90 it costs about 15 instructions an
    element."""
    t = tl.minimum(tl.maximum(x * inv_scale, -448.0), 448.0)
    if FAST:
        return t.to(tl.float8e4nv)
    exponent = ((t.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    step = ((tl.maximum(exponent, -6) - 3 + 127) << 23).to(tl.float32, bitcast=True)
    r = ((t / step + 12582912.0) - 12582912.0) * step
    return r.to(tl.float8e4nv)


@triton.jit
def _sin(x, FAST: tl.constexpr):
    """sin(x). FAST (a GPU): the hardware's sin.approx of x itself. The MUFU works in turns:
    ptxas scales x by 1 / (2 pi) in fp32, so the argument carries a rounding of about
    |x| * 2^-24 radians -- what forming x = alpha * h in fp32 already carries -- on top of the
    approximation's own ~2^-21. An explicit reduction to [-pi, pi] first (floor's FRND at the
    quarter rate, and four FMAs) changed no output of the 60 s decodes and cost INT8 engines
    5% (benchmarks/results/epilogue/). tl.sin is CUDA's accurate sinf, whose slow path for
    huge arguments (a Payne-Hanek reduction in local memory) is inlined for every element of
    the tile: on sm_90 it made the kernel 6x longer in PTX, spilled it to local memory and
    took seconds to compile, for arguments that never occur here (|alpha * x| is a few tens
    at most)."""
    if FAST:
        return tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    return tl.sin(x)


@triton.jit
def _tile(tile_id, b, x_desc, w_desc, y_desc, s_desc, w_scale_ptr, bias_ptr, alpha_ptr, inv_beta_ptr,
          N, C_IN, TAPS, DIL, PAD, N_HALF, N_CH, x_scale, inv_s_scale, res_scale,
          INT8_IN: tl.constexpr, FP8_IN: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr,
          RES_QUANT: tl.constexpr, STORE_Y: tl.constexpr, AUDIO: tl.constexpr, STORE_S: tl.constexpr,
          S_INT8: tl.constexpr, S_FP8: tl.constexpr, FP8_ACC: tl.constexpr,
          TRANSPOSED: tl.constexpr, FAST_SIN: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
          WS: tl.constexpr):
    """One [BM, BN] output tile (`tile_id` counts column blocks fastest) of batch item b."""
    num_n = tl.cdiv(N, BN)
    pid_n = tile_id % num_n  # column blocks of one row block run side by side: its input rows stay in L2
    pid_m = tile_id // num_n
    m0, n0 = pid_m * BM, pid_n * BN
    row0 = m0 - PAD
    if TRANSPOSED:
        row0 = row0 + (n0 >= N_HALF).to(tl.int32)
    num_kc = C_IN // BK
    if INT8_IN:
        acc = tl.zeros((BM, BN), dtype=tl.int32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    for kk in tl.range(0, TAPS * num_kc, warp_specialize=WS):
        tap = kk // num_kc
        c0 = (kk - tap * num_kc) * BK
        a = x_desc.load([b, row0 + tap * DIL, c0]).reshape(BM, BK)
        w = w_desc.load([n0, tap * C_IN + c0])
        if INT8_IN:
            acc = tl.dot(a, w.T, acc, out_dtype=tl.int32)
        elif FP8_IN and FP8_ACC > 0:  # Hopper's fp8 MMA adds in reduced precision: promote every FP8_ACC
            acc = tl.dot(a, w.T, acc, max_num_imprecise_acc=FP8_ACC)
        else:
            acc = tl.dot(a, w.T, acc)

    # Epilogue. Per-channel vectors by pointer (BN values); tiles through descriptors, which
    # need no per-element addresses in registers and clip at the tensor's edges themselves.
    offs_n = n0 + tl.arange(0, BN)
    n_mask = offs_n < N
    v = acc.to(tl.float32)
    if INT8_IN or FP8_IN:
        w_scale = tl.load(w_scale_ptr + offs_n, mask=n_mask, other=0.0)
        v = v * (w_scale * x_scale)[None, :]
    if TRANSPOSED:
        ch = offs_n % N_CH
    else:
        ch = offs_n
    if HAS_BIAS:
        v += tl.load(bias_ptr + ch, mask=n_mask, other=0.0)[None, :]
    if RESIDUAL:  # y holds the residual stream: read, add, write back in place
        r = y_desc.load([b, m0, n0]).reshape(BM, BN).to(tl.float32)
        if RES_QUANT:  # the skip input's Q/DQ of the fused placement
            r = (_quantize(r, 1.0 / res_scale) * res_scale).to(tl.float16).to(tl.float32)
        v += r
    if STORE_Y:
        if AUDIO:  # the decoder's output, float32 [B, channels, samples]
            y_desc.store([b, n0, m0], tl.trans(v).reshape(1, BN, BM))
        else:
            y_desc.store([b, m0, n0], v.to(tl.float16).reshape(1, BM, BN))
    if STORE_S:
        h = v.to(tl.float16).to(tl.float32)  # the value as stored, which is what the next layer sees
        alpha = tl.load(alpha_ptr + ch, mask=n_mask, other=0.0)
        inv_beta = tl.load(inv_beta_ptr + ch, mask=n_mask, other=0.0)
        sn = _sin(h * alpha[None, :], FAST_SIN)
        s = h + inv_beta[None, :] * (sn * sn)
        if S_INT8:
            q = _quantize_int8(s.to(tl.float16).to(tl.float32), inv_s_scale)
            s_desc.store([b, m0, n0], q.reshape(1, BM, BN))
        elif S_FP8:
            s_desc.store([b, m0, n0], _quantize_fp8(s.to(tl.float16).to(tl.float32), inv_s_scale,
                                                    FAST_SIN).reshape(1, BM, BN))
        else:
            s_desc.store([b, m0, n0], s.to(tl.float16).reshape(1, BM, BN))


@triton.jit(do_not_specialize=["M"])
def fused_conv_kernel(
        x_desc, w_desc, y_desc, s_desc, w_scale_ptr, bias_ptr, alpha_ptr, inv_beta_ptr,
        M, N, C_IN, TAPS, DIL, PAD, N_HALF, N_CH, x_scale, inv_s_scale, res_scale,
        INT8_IN: tl.constexpr, FP8_IN: tl.constexpr, HAS_BIAS: tl.constexpr, RESIDUAL: tl.constexpr,
        RES_QUANT: tl.constexpr, STORE_Y: tl.constexpr, AUDIO: tl.constexpr, STORE_S: tl.constexpr,
        S_INT8: tl.constexpr, S_FP8: tl.constexpr, FP8_ACC: tl.constexpr,
        TRANSPOSED: tl.constexpr, FAST_SIN: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        PERSISTENT: tl.constexpr, WS: tl.constexpr, INFLIGHT: tl.constexpr = False):
    # INFLIGHT: compiled with kernels.inflight's rewrite (int8 on sm_90); the constexpr keeps it apart in caches
    b = tl.program_id(1)
    if PERSISTENT:  # a fixed grid of programs walks the tiles (the GPU's multiprocessors each keep one)
        num_tiles = tl.cdiv(M, BM) * tl.cdiv(N, BN)
        for tile_id in tl.range(tl.program_id(0), num_tiles, tl.num_programs(0)):
            _tile(tile_id, b, x_desc, w_desc, y_desc, s_desc, w_scale_ptr, bias_ptr, alpha_ptr, inv_beta_ptr,
                  N, C_IN, TAPS, DIL, PAD, N_HALF, N_CH, x_scale, inv_s_scale, res_scale, INT8_IN, FP8_IN,
                  HAS_BIAS, RESIDUAL, RES_QUANT, STORE_Y, AUDIO, STORE_S, S_INT8, S_FP8, FP8_ACC, TRANSPOSED, FAST_SIN,
                  BM, BN, BK, WS)
    else:
        _tile(tl.program_id(0), b, x_desc, w_desc, y_desc, s_desc, w_scale_ptr, bias_ptr, alpha_ptr, inv_beta_ptr,
              N, C_IN, TAPS, DIL, PAD, N_HALF, N_CH, x_scale, inv_s_scale, res_scale, INT8_IN, FP8_IN,
              HAS_BIAS, RESIDUAL, RES_QUANT, STORE_Y, AUDIO, STORE_S, S_INT8, S_FP8, FP8_ACC, TRANSPOSED, FAST_SIN, BM,
              BN, BK, WS)


def tile_flags(tile: Any) -> tuple[int, int, int]:
    """A layer tile's flags after its five numbers (launch's docstring): persistent, warp-specialized,
    registers; 0 where the tile leaves one out."""
    persistent, ws, registers = (list(tile[5:]) + [0, 0, 0])[:3]
    return persistent, ws, registers


def _desc(t: Any, block: list[int]) -> Any:
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block)


def launch(x: Any, weight: Any, w_scale: Any, bias: Any, alpha: Any, inv_beta: Any, y: Any, s: Any, *,
           taps: int, dilation: int, padding: int, stride: int, x_scale: float, s_scale: float, res_scale: float,
           residual: bool, audio: bool, tile: tuple[int, ...], fp8_acc: int | None = None) -> None:
    """Run the kernel. x: [B, M, C] contiguous, fp16, int8 or float8 e4m3fn (then the weight's
    type too); weight [N, taps * C] K-major, contiguous; y: [B, M, N] (the residual stream
    when `residual`), or when `audio` the float32 output [B, N, M]; s: [B, M, N], fp16, or
    quantized with s_scale to its type (int8, float8 e4m3fn); y and s contiguous, None where
    not stored; tile
    (BM, BN, BK, warps, stages[, persistent[, warp-specialized[, registers]]]): persistent > 0
    launches that many programs per multiprocessor, which walk the tiles; warp-specialized 1
    splits the K loop's loads and multiplies between warp groups (Triton's warp_specialize);
    registers > 0 caps each thread's registers (ptxas's maxnreg): an 8-warp tile over 128 a
    thread keeps one program per multiprocessor, at 128 or under two fit. fp8_acc
    (fp8 operands): how many products Hopper's tensor cores may add in their reduced-precision
    accumulator before the sum is promoted to the fp32 one -- None: every BK (one load's
    channels), 0: Triton's sm_90 default (never: faster, and measured steps off on the GPU)."""
    batch, rows, channels = x.shape
    n, k = weight.shape
    bm, bn, bk, warps, stages = tile[:5]
    persistent, ws, registers = tile_flags(tile)
    if channels % bk:
        raise ValueError(f"tile BK={bk} does not divide the {channels} input channels")
    if stride and (n // 2) % bn:
        raise ValueError(f"tile BN={bn} does not divide the transposed layer's half width {n // 2}")
    x_desc = _desc(x, [1, bm, bk])
    w_desc = _desc(weight, [bn, bk])
    y_desc = None if y is None else _desc(y, [1, bn, bm] if audio else [1, bm, bn])
    s_desc = None if s is None else _desc(s, [1, bm, bn])
    tiles = triton.cdiv(rows, bm) * triton.cdiv(n, bn)
    grid = (min(tiles, persistent * _multiprocessors(x)) if persistent else tiles, batch)
    keep = x.is_cuda and x.dtype == torch.int8 and inflight.enabled()
    with inflight.rewriting(keep):
        fused_conv_kernel[grid](
            x_desc, w_desc, y_desc or s_desc, s_desc or y_desc, w_scale if w_scale is not None else weight,
            bias if bias is not None else weight, alpha if alpha is not None else weight,
            inv_beta if inv_beta is not None else weight,
            rows, n, channels, taps, dilation, padding, n // 2, n // stride if stride else n,
            float(x_scale), 1.0 / s_scale if s_scale > 0 else 0.0, float(res_scale),
            INT8_IN=x.dtype == torch.int8, FP8_IN=x.dtype == torch.float8_e4m3fn, HAS_BIAS=bias is not None,
            RESIDUAL=residual, RES_QUANT=res_scale > 0, STORE_Y=y is not None, AUDIO=audio, STORE_S=s is not None,
            S_INT8=s is not None and s.dtype == torch.int8, S_FP8=s is not None and s.dtype == torch.float8_e4m3fn,
            FP8_ACC=(bk if fp8_acc is None else fp8_acc) if x.dtype == torch.float8_e4m3fn else 0,
            TRANSPOSED=stride > 0, FAST_SIN=x.is_cuda, BM=bm, BN=bn, BK=bk, PERSISTENT=bool(persistent), WS=bool(ws),
            INFLIGHT=keep, num_warps=warps, num_stages=stages, **({"maxnreg": registers} if registers else {}))


def _multiprocessors(x: Any) -> int:
    """The GPU's multiprocessor count (a persistent launch's unit); 4 on a CPU (the interpreter)."""
    return torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
