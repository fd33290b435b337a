"""The decoder's last convolution (C channels -> 2 audio channels, k taps) as one GEMM over
taps-times-channels columns and a shifted sum, reading its input once.

Why: the layer kernel (kernels.triton_conv) loads each input row once per tap -- 7 loads of a
[BM, C] slice for a k=7 layer. That costs nothing where a load feeds BN = 128 output columns,
but the output convolution has 2: it is bound by those reloads (on the H100, 0.46 ms int8 and
0.92 ms fp16 for a 60 s decode, 2.88 M rows of 128 channels, where reading the input once and
writing the audio takes about 0.13 / 0.25 ms: benchmarks/results/README.md).

Here one program loads BM input rows once (all C channels, BK at a time) and multiplies them
by the weight read as NP >= taps * 2 columns, column tap * 2 + n holding output channel n's
tap (gathered from the layer's own K-major weight, zeros past taps * 2): P [BM, NP] =
x [BM, C] @ W' [C, NP], the partial sums of every tap at every row, in
fp32 (int8 operands: exact int32 sums, then the weight's per-channel and the input's scales).
P goes to the program's own slot of a small scratch buffer (one slot per program of a
persistent grid: a few MB that stay in L2), and the audio comes out as

    y[n, t] = bias[n] + sum over taps of P[t - pad + tap, tap * 2 + n]

read back from the slot shifted by the tap. Rows a tile needs from its neighbours (pad on each
side) are recomputed: a program's BM input rows give BM - 2 * pad output rows. Rows outside the
sequence load as zeros (the tensor descriptor's fill), which is the convolution's padding.
The arithmetic is the layer's: the same rounded operands, exact (int8) or fp32 (fp16) sums;
only the order in which the taps' fp32 partials add differs.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from vae_engines.core.lazy import lazy_import
from vae_engines.kernels.op import OUTCONV_COLUMNS as NP

torch = lazy_import("torch")


@triton.jit(do_not_specialize=["M"])
def output_conv_kernel(x_desc, w_ptr, w_scale_ptr, bias_ptr, out_ptr, scratch_ptr, M, x_scale,
                       C: tl.constexpr, N: tl.constexpr, TAPS: tl.constexpr, PAD: tl.constexpr,
                       QUANT: tl.constexpr, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr,
                       NPAD: tl.constexpr, INT8: tl.constexpr = True):
    b = tl.program_id(1)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    out_rows: tl.constexpr = BM - 2 * PAD
    rows = tl.arange(0, BM)
    cols = tl.arange(0, NPAD)
    slot = scratch_ptr + (b * nprog + pid) * BM * NPAD
    col_scale = tl.load(w_scale_ptr + cols % N, mask=cols < TAPS * N, other=0.0) * x_scale
    # column j = tap * N + n of W' is row n, taps tap's C channels of the K-major weight [N, TAPS * C]
    w_rows = w_ptr + (cols % N) * (TAPS * C) + (cols // N) * C
    for tile in tl.range(pid, tl.cdiv(M, out_rows), nprog):
        o0 = tile * out_rows
        if QUANT and INT8:
            acc = tl.zeros((BM, NPAD), dtype=tl.int32)
        else:
            acc = tl.zeros((BM, NPAD), dtype=tl.float32)
        for kc in tl.range(0, C // BK):
            a = x_desc.load([b, o0 - PAD, kc * BK]).reshape(BM, BK)
            w = tl.load(w_rows[:, None] + kc * BK + tl.arange(0, BK)[None, :], mask=(cols < TAPS * N)[:, None],
                        other=0 if INT8 else 0.0)  # compiled Triton casts no int to fp8
            if QUANT and INT8:
                acc = tl.dot(a, w.T, acc, out_dtype=tl.int32)
            elif QUANT:  # float8 e4m3fn: Hopper's reduced-precision sums promoted every BK products
                acc = tl.dot(a, w.T, acc, max_num_imprecise_acc=BK)
            else:
                acc = tl.dot(a, w.T, acc)
        p = acc.to(tl.float32)
        if QUANT:
            p = p * col_scale[None, :]
        tl.debug_barrier()  # every thread is done reading the slot's previous tile
        tl.store(slot + rows[:, None] * NPAD + cols[None, :], p)
        tl.debug_barrier()  # and the slot holds this tile's partials for all of them
        keep = (rows < out_rows) & (o0 + rows < M)
        for n in tl.static_range(N):
            y = tl.zeros((BM,), dtype=tl.float32)
            if HAS_BIAS:
                y += tl.load(bias_ptr + n)
            for tap in tl.static_range(TAPS):
                y += tl.load(slot + (rows + tap) * NPAD + tap * N + n, mask=rows < out_rows, other=0.0)
            tl.store(out_ptr + (b * N + n) * M + o0 + rows, y, mask=keep)


def launch(x: Any, weight: Any, w_scale: Any, bias: Any, out: Any, *, taps: int, padding: int, x_scale: float,
           tile: tuple[int, ...]) -> None:
    """x [B, M, C] contiguous (fp16, or int8 / float8 e4m3fn with x_scale); weight: the layer's
    K-major [n, taps * C] of the same type, contiguous; w_scale [n] (quantized) or None; out float32
    [B, n, M]. tile (BM, BK, warps, stages, programs per multiprocessor)."""
    batch, rows, channels = x.shape
    bm, bk, warps, stages, per_sm = tile
    tiles = triton.cdiv(rows, bm - 2 * padding)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
    programs = max(1, min(tiles, per_sm * sms))
    scratch = torch.empty(batch * programs * bm * NP, dtype=torch.float32, device=x.device)
    x_desc = TensorDescriptor(x, list(x.shape), list(x.stride()), [1, bm, bk])
    quant = x.dtype in (torch.int8, torch.float8_e4m3fn)
    output_conv_kernel[(programs, batch)](
        x_desc, weight, w_scale if w_scale is not None else scratch, bias if bias is not None else scratch, out,
        scratch,
        rows, float(x_scale), C=channels, N=weight.shape[0], TAPS=taps, PAD=padding, QUANT=quant,
        HAS_BIAS=bias is not None, BM=bm, BK=bk, NPAD=NP, INT8=x.dtype == torch.int8, num_warps=warps,
        num_stages=stages)
