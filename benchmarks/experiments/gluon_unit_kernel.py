"""A residual unit of 128 channels, int8, as a persistent Gluon kernel with its weights resident
in shared memory (Hopper: TMA, wgmma, mbarriers, warp specialization). An experiment's record
(issue 36): in the package from ff80a1b behind a switch, withdrawn after its H100 timing
(benchmarks/results/README.md, "A persistent Gluon int8 unit kernel"): 1.43-2.87x slower than
kernels.triton_unit at every shape, with the same outputs bit for bit (the Triton kernel's as they
were then: its Snakes have since dropped two fp16 roundings, kernels.reference.unit_snake).

Oobleck's residual unit is two layers (kernels.triton_unit says which); this kernel computes it
with the Triton unit kernel's arithmetic step by step, so their outputs agree to
kernels.op.TOLERANCES (benchmarks/experiments/gpu_gluon_unit.py checks that on a GPU: Gluon has
no interpreter). What differs is the schedule:
- each program loads both weights once (k=7: 7 x 128 x 128 int8 = 112 KiB, k=1: 16 KiB), keeps
  them in shared memory and walks its 64-row tiles (persistent): the Triton kernel reloads the
  k=7 weights for every tile;
- each tap's shifted input window comes by one TMA load into a ring of NA buffers, kept NA
  windows ahead across tiles (Gluon has no shifted view of one shared-memory tile: a subslice
  starts at a multiple of its own length);
- one or two consumer warpgroups (gl.warp_specialize), each walking its own tiles, so that one
  can hold the tensor cores while the other runs its epilogue's sines; loads issued by the
  consumers or by a producer warp per consumer, buffers handed back through mbarriers; the k=7
  wgmmas synchronous or asynchronous.

A tile of this kernel is [64, 0, NA, consumers, async, producer, staged] (BK = 0 marks it; the
Triton unit tiles have BK > 0). It is written to Triton 3.6's API (the lent GPU's) and compiles
with 3.9's too (benchmarks/experiments/gluon_unit.py records both for sm_90).
"""

from __future__ import annotations

from typing import Any

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)

# Triton 3.6 names its TMA copies async_copy_global_to_shared / async_copy_shared_to_global; 3.9
# renamed them async_load / async_store and made the old names raise
TMA_LOAD = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
TMA_STORE = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global

C_UNIT = 128  # channels this kernel takes (blocks 3-4)
TAPS = 7
BM = 64  # output rows per tile and consumer (one m64 wgmma row block)


@gluon.jit
def _snake(v, alpha, inv_beta):
    """Snake of the fp16-rounded value, rounded to fp16 (kernels.triton_unit._snake, sin.approx)."""
    h = v.to(gl.float16).to(gl.float32)
    sn = gl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [h * alpha[None, :]], dtype=gl.float32,
                                   is_pure=True, pack=1)
    return (h + inv_beta[None, :] * (sn * sn)).to(gl.float16).to(gl.float32)


@gluon.jit
def _int8(x, inv_scale):
    """kernels.triton_conv._quantize_int8: saturate, round half to even by + 1.5 * 2^23, low byte."""
    t = gl.minimum(gl.maximum(x * inv_scale, -128.0), 127.0) + 12582912.0
    return t.to(gl.int32, bitcast=True).to(gl.int8)


@gluon.jit
def _tap(w1_a, w1_b, w1_c, T: gl.constexpr):
    """Tap T's [C out, C in] slice of the resident k=7 weights."""
    if T < 4:
        return w1_a.index(T)
    elif T < 6:
        return w1_b.index(T - 4)
    else:
        return w1_c


@gluon.jit
def _load_rows(desc, bar, dst, row, pred):
    """TMA: a block of rows from `row` into dst, signalling bar (zeros outside the sequence)."""
    nbytes: gl.constexpr = desc.block_type.shape[0] * desc.block_type.shape[1] * desc.dtype.primitive_bitwidth // 8
    mbarrier.expect(bar, nbytes, pred=pred)
    TMA_LOAD(desc, [row, 0], bar, dst, pred=pred)


@gluon.jit
def _load_window(x_desc, bars, a_smem, w, first, step, n_tiles, CID: gl.constexpr, DIL: gl.constexpr,
                 BM: gl.constexpr, NA: gl.constexpr):
    """The consumer's w-th input window (tile w // 7, tap w % 7) into its ring slot w % NA."""
    tile = first + (w // 7) * step
    tap = w % 7
    _load_rows(x_desc, bars.index(CID * 16 + w % NA), a_smem.index(CID * NA + w % NA), tile * BM + (tap - 3) * DIL,
               tile < n_tiles)


@gluon.jit
def _free_window(x_desc, bars, a_smem, w, first, step, n_tiles, CID: gl.constexpr, DIL: gl.constexpr,
                 BM: gl.constexpr, NA: gl.constexpr, FED: gl.constexpr):
    """Window w's wgmma has read its slot: hand it to the producer (FED), or load window w + NA into it."""
    if FED:
        mbarrier.arrive(bars.index(CID * 16 + 4 + w % NA))
    else:
        _load_window(x_desc, bars, a_smem, w + NA, first, step, n_tiles, CID, DIL, BM, NA)


@gluon.jit
def _producer(CID: gl.constexpr, x_desc, y_desc, a_smem, y_smem, bars, n_tiles, DIL: gl.constexpr, BM: gl.constexpr,
              NA: gl.constexpr, CONSUMERS: gl.constexpr):
    """One warp issuing every TMA load of consumer CID, each window into a slot the consumer has
    handed back, its residual tile once it has read the last. One producer per consumer: a
    producer shared by two would wait on one consumer's slots while the other starves, and the
    two would run in step."""
    step = gl.num_programs(0) * CONSUMERS
    first = gl.program_id(0) * CONSUMERS + CID
    mine = (gl.maximum(n_tiles - first, 0) + step - 1) // step
    for i in range(mine):
        tile = first + i * step
        for t in gl.static_range(7):
            w = i * 7 + t
            mbarrier.wait(bars.index(CID * 16 + 4 + w % NA), (w // NA - 1) & 1, pred=w >= NA)
            _load_window(x_desc, bars, a_smem, w, first, step, n_tiles, CID, DIL, BM, NA)
            if t == 2:  # the residual tile, read after the k=7 GEMM, once the last one is read
                mbarrier.wait(bars.index(CID * 16 + 9), (i - 1) & 1, pred=i > 0)
                _load_rows(y_desc, bars.index(CID * 16 + 8), y_smem.index(CID), tile * BM, True)


@gluon.jit
def _consumer(CID: gl.constexpr, x_desc, y_desc, s_desc, y_ptr, s_ptr, w1_a, w1_b, w1_c, w2_smem, a_smem, y_smem,
              o_smem, s_smem, bars, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, w2_scale_ptr, b2_ptr,
              alpha2_ptr, inv_beta2_ptr, M, n_tiles, x_scale, inv_mid_scale, mid_scale, inv_s_scale,
              C: gl.constexpr, DIL: gl.constexpr, BM: gl.constexpr, NA: gl.constexpr, STAGE_OUT: gl.constexpr,
              ASYNC: gl.constexpr, FED: gl.constexpr, CONSUMERS: gl.constexpr, WARPS: gl.constexpr):
    """One warpgroup's walk over its row tiles: tiles CID, CID + CONSUMERS, ... of its program's share.
    The k=7 GEMM takes its seven shifted input windows from a ring of NA shared-memory buffers that
    TMA keeps NA windows ahead, across tile boundaries: issued here, or (FED) by the producer warp,
    to which this consumer hands each buffer back through an mbarrier once its wgmma has read it.
    Barriers of consumer CID, from CID * 16: its NA ring slots' (full), then (FED) the same slots'
    (empty, from + 4), its residual buffer's (full, + 8) and (FED, empty, + 9)."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, C, 32])
    a_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    cols = gl.arange(0, C, layout=gl.SliceLayout(0, mma))
    rows = gl.arange(0, BM, layout=gl.SliceLayout(1, mma))
    first = gl.program_id(0) * CONSUMERS + CID
    step = gl.num_programs(0) * CONSUMERS
    mine = (gl.maximum(n_tiles - first, 0) + step - 1) // step
    y_bar = bars.index(CID * 16 + 8)
    y_buf = y_smem.index(CID)
    if not FED:
        for j in gl.static_range(NA):
            _load_window(x_desc, bars, a_smem, j, first, step, n_tiles, CID, DIL, BM, NA)
        _load_rows(y_desc, y_bar, y_buf, first * BM, first < n_tiles)
    for i in range(mine):
        tile = first + i * step
        m0 = tile * BM
        acc = gl.zeros([BM, C], gl.int32, layout=mma)
        for t in gl.static_range(7):
            w = i * 7 + t
            mbarrier.wait(bars.index(CID * 16 + w % NA), (w // NA) & 1)
            acc = warpgroup_mma(a_smem.index(CID * NA + w % NA), _tap(w1_a, w1_b, w1_c, t).permute((1, 0)), acc,
                                is_async=ASYNC)
            if ASYNC:  # one wgmma in flight: the previous window's is done, so its slot can refill
                acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
                if t > 0:
                    _free_window(x_desc, bars, a_smem, w - 1, first, step, n_tiles, CID, DIL, BM, NA, FED)
            else:
                _free_window(x_desc, bars, a_smem, w, first, step, n_tiles, CID, DIL, BM, NA, FED)
        if ASYNC:
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            _free_window(x_desc, bars, a_smem, i * 7 + 6, first, step, n_tiles, CID, DIL, BM, NA, FED)
        # the k=7 layer's epilogue: dequantize, bias, Snake, int8 with the k=1 layer's input scale
        v = acc.to(gl.float32) * (gl.load(w1_scale_ptr + cols) * x_scale)[None, :]
        v += gl.load(b1_ptr + cols)[None, :]
        mid = _int8(_snake(v, gl.load(alpha1_ptr + cols), gl.load(inv_beta1_ptr + cols)), inv_mid_scale)
        acc2 = warpgroup_mma(gl.convert_layout(mid, a_op), w2_smem.permute((1, 0)),
                             gl.zeros([BM, C], gl.int32, layout=mma))
        mbarrier.wait(y_bar, i & 1)
        r = y_buf.load(mma).to(gl.float32)
        if FED:
            mbarrier.arrive(bars.index(CID * 16 + 9))
        else:
            _load_rows(y_desc, y_bar, y_buf, (tile + step) * BM, tile + step < n_tiles)
        v = acc2.to(gl.float32) * (gl.load(w2_scale_ptr + cols) * mid_scale)[None, :]
        v += gl.load(b2_ptr + cols)[None, :]
        v += r
        y = v.to(gl.float16)
        s = _int8(_snake(v, gl.load(alpha2_ptr + cols), gl.load(inv_beta2_ptr + cols)), inv_s_scale)
        if STAGE_OUT:
            tma.store_wait(0)  # the previous tile's stores have left the staging buffers
            o_smem.store(y)
            s_smem.store(s)
            fence_async_shared()
            TMA_STORE(y_desc, [m0, 0], o_smem)
            TMA_STORE(s_desc, [m0, 0], s_smem)
        else:
            base = m0.to(gl.int64) * C  # past 2^31 elements from 16.7 M rows (a 10-minute decode's block 4)
            offs = rows[:, None] * C + cols[None, :]
            inside = (m0 + rows < M)[:, None]
            gl.store(y_ptr + base + offs, y, mask=inside)
            gl.store(s_ptr + base + offs, s, mask=inside)
    if STAGE_OUT:
        tma.store_wait(0)


@gluon.jit
def gluon_unit_kernel(x_desc, w1_desc, w2_desc, y_desc, s_desc, y_ptr, s_ptr, w1_scale_ptr, b1_ptr, alpha1_ptr,
                      inv_beta1_ptr, w2_scale_ptr, b2_ptr, alpha2_ptr, inv_beta2_ptr, M, n_tiles, x_scale,
                      inv_mid_scale, mid_scale, inv_s_scale, C: gl.constexpr, DIL: gl.constexpr, BM: gl.constexpr,
                      NA: gl.constexpr, STAGE_OUT: gl.constexpr, ASYNC: gl.constexpr, FED: gl.constexpr,
                      CONSUMERS: gl.constexpr, WORKER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
                      num_warps: gl.constexpr):
    gl.static_assert(NA <= 4, "a consumer's barriers: 4 ring slots (full), 4 (empty), its residual's 2")
    gl.static_assert(not STAGE_OUT or CONSUMERS == 1, "one set of staging buffers: one consumer")
    # weights, resident: k=7 as 7 [C out, C in] slices (K-major, as 8-bit wgmma takes B), k=1 [C, C]
    # (shared-memory shapes are powers of two: taps 0-3, 4-5 and 6 in three buffers)
    w1_a = gl.allocate_shared_memory(gl.int8, [4, C, C], w1_desc.layout)
    w1_b = gl.allocate_shared_memory(gl.int8, [2, C, C], w1_desc.layout)
    w1_c = gl.allocate_shared_memory(gl.int8, [C, C], w1_desc.layout)
    w2_smem = gl.allocate_shared_memory(gl.int8, [C, C], w2_desc.layout)
    a_smem = gl.allocate_shared_memory(gl.int8, [CONSUMERS * NA, BM, C], x_desc.layout)
    y_smem = gl.allocate_shared_memory(gl.float16, [CONSUMERS, BM, C], y_desc.layout)
    if STAGE_OUT:
        o_smem = gl.allocate_shared_memory(gl.float16, [BM, C], y_desc.layout)
        s_smem = gl.allocate_shared_memory(gl.int8, [BM, C], s_desc.layout)
    else:
        o_smem = w2_smem
        s_smem = w2_smem
    N_BARS: gl.constexpr = 32  # 16 per consumer (its ring's, then its residual's); the weights' is the last
    bars = gl.allocate_shared_memory(gl.int64, [N_BARS, 1], mbarrier.MBarrierLayout())
    for j in gl.static_range(N_BARS):
        mbarrier.init(bars.index(j), count=1)
    fence_async_shared()
    w_bar = bars.index(N_BARS - 1)
    mbarrier.expect(w_bar, 8 * C * C)
    for t in gl.static_range(7):
        TMA_LOAD(w1_desc, [0, t * C], w_bar, _tap(w1_a, w1_b, w1_c, t))
    TMA_LOAD(w2_desc, [0, 0], w_bar, w2_smem)
    mbarrier.wait(w_bar, 0)
    # (the arguments are spelled out at each call: constexprs inside a tuple built here reach
    # warp_specialize's partitions as values, not constants)
    if CONSUMERS == 1:
        _consumer(0, x_desc, y_desc, s_desc, y_ptr, s_ptr, w1_a, w1_b, w1_c, w2_smem, a_smem, y_smem, o_smem, s_smem,
                  bars, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, w2_scale_ptr, b2_ptr, alpha2_ptr,
                  inv_beta2_ptr, M, n_tiles, x_scale, inv_mid_scale, mid_scale, inv_s_scale, C, DIL, BM, NA,
                  STAGE_OUT, ASYNC, FED, CONSUMERS, num_warps)
    elif FED:
        gl.warp_specialize([
            (_consumer, (0, x_desc, y_desc, s_desc, y_ptr, s_ptr, w1_a, w1_b, w1_c, w2_smem, a_smem, y_smem, o_smem,
                         s_smem, bars, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, w2_scale_ptr, b2_ptr,
                         alpha2_ptr, inv_beta2_ptr, M, n_tiles, x_scale, inv_mid_scale, mid_scale, inv_s_scale, C, DIL,
                         BM, NA, STAGE_OUT, ASYNC, FED, CONSUMERS, num_warps)),
            (_consumer, (1, x_desc, y_desc, s_desc, y_ptr, s_ptr, w1_a, w1_b, w1_c, w2_smem, a_smem, y_smem, o_smem,
                         s_smem, bars, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, w2_scale_ptr, b2_ptr,
                         alpha2_ptr, inv_beta2_ptr, M, n_tiles, x_scale, inv_mid_scale, mid_scale, inv_s_scale, C, DIL,
                         BM, NA, STAGE_OUT, ASYNC, FED, CONSUMERS, num_warps)),
            (_producer, (0, x_desc, y_desc, a_smem, y_smem, bars, n_tiles, DIL, BM, NA, CONSUMERS)),
            (_producer, (1, x_desc, y_desc, a_smem, y_smem, bars, n_tiles, DIL, BM, NA, CONSUMERS))],
            [num_warps, 1, 1], [WORKER_REGS, PRODUCER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize([
            (_consumer, (0, x_desc, y_desc, s_desc, y_ptr, s_ptr, w1_a, w1_b, w1_c, w2_smem, a_smem, y_smem, o_smem,
                         s_smem, bars, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, w2_scale_ptr, b2_ptr,
                         alpha2_ptr, inv_beta2_ptr, M, n_tiles, x_scale, inv_mid_scale, mid_scale, inv_s_scale, C, DIL,
                         BM, NA, STAGE_OUT, ASYNC, FED, CONSUMERS, num_warps)),
            (_consumer, (1, x_desc, y_desc, s_desc, y_ptr, s_ptr, w1_a, w1_b, w1_c, w2_smem, a_smem, y_smem, o_smem,
                         s_smem, bars, w1_scale_ptr, b1_ptr, alpha1_ptr, inv_beta1_ptr, w2_scale_ptr, b2_ptr,
                         alpha2_ptr, inv_beta2_ptr, M, n_tiles, x_scale, inv_mid_scale, mid_scale, inv_s_scale, C, DIL,
                         BM, NA, STAGE_OUT, ASYNC, FED, CONSUMERS, num_warps))], [num_warps], [WORKER_REGS])
    for j in gl.static_range(N_BARS):
        mbarrier.invalidate(bars.index(j))


TILES = {  # name: [BM, 0, NA, consumers, asynchronous k=7 wgmmas, producer warps, outputs staged by TMA]
    "one_wg_staged": [64, 0, 4, 1, 0, 0, 1],
    "one_wg_staged_async": [64, 0, 4, 1, 1, 0, 1],
    "one_wg_direct": [64, 0, 4, 1, 0, 0, 0],
    "two_wg_ring2": [64, 0, 2, 2, 0, 0, 0],
    "two_wg_ring4": [64, 0, 4, 2, 0, 0, 0],
    "two_wg_ring4_async": [64, 0, 4, 2, 1, 0, 0],
    "two_wg_producer": [64, 0, 4, 2, 0, 1, 0],
    "two_wg_producer_async": [64, 0, 4, 2, 1, 1, 0],
}
WARPS = 4  # a consumer warpgroup
# Registers (setmaxnreg) of the second consumer and of the producer warps. Triton places the
# partitions in whole warpgroups (the two 1-warp producers share one) and sizes the register pool
# to what its warps may hold at launch (two consumers: 8 warps x 256; with the producers: 12
# warps x 168 = 64,512 a program, `.maxnreg` in the PTX), so the counts must fit that pool:
# 128 threads x (default + WORKER_REGS + PRODUCER_REGS) <= 64,512 with the producers, the default
# consumer getting 256. A consumer needs about 170. (A first 256 + 232 + 40 did not fit:
# setmaxnreg.inc would have waited for ever.)
WORKER_REGS = {False: 232, True: 208}  # by FED
PRODUCER_REGS = 24
GL_TYPES = {"x": gl.int8, "w1": gl.int8, "w2": gl.int8, "y": gl.float16, "s": gl.int8}


def _layout(block: list[int], dtype: Any) -> Any:
    return gl.NVMMASharedLayout.get_default_for(block, dtype)


def blocks() -> dict[str, list[int]]:
    """TMA block shapes: an input window, a tap's weights, the k=1 weights, residual and Snake output tiles."""
    return {"x": [BM, C_UNIT], "w1": [C_UNIT, C_UNIT], "w2": [C_UNIT, C_UNIT], "y": [BM, C_UNIT], "s": [BM, C_UNIT]}


def constants(tile: list[int] | tuple[int, ...], dilation: int) -> dict:
    """The kernel's constexprs for a tile (TILES) and a dilation."""
    bm, _, ring, consumers, asynchronous, fed, staged = tile
    return dict(C=C_UNIT, DIL=dilation, BM=bm, NA=ring, STAGE_OUT=bool(staged), ASYNC=bool(asynchronous),
                FED=bool(fed), CONSUMERS=consumers, WORKER_REGS=WORKER_REGS[bool(fed)], PRODUCER_REGS=PRODUCER_REGS,
                num_warps=WARPS)


def launch(x: Any, w1: Any, w1_scale: Any, b1: Any, alpha1: Any, inv_beta1: Any, w2: Any, w2_scale: Any, b2: Any,
           alpha2: Any, inv_beta2: Any, y: Any, s: Any, *, taps: int, dilation: int, x_scale: float,
           mid_scale: float, s_scale: float, res_scale: float, tile: list[int] | tuple[int, ...],
           programs: int) -> None:
    """kernels.triton_unit.launch's unit, where this kernel takes it: int8 x [B, M, 128] and both
    weights int8, biases, an int8 Snake output s, no quantized skip (res_scale 0), 7 taps; y is
    updated in place. `programs`: persistent programs (the multiprocessors). One launch per batch
    item, its [M, C] rows under 2-D descriptors."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    batch, rows, channels = x.shape
    missing = any(v is None for v in (w1_scale, b1, w2_scale, b2, alpha2, inv_beta2, s))
    if (channels != C_UNIT or taps != TAPS or x.dtype.is_floating_point or mid_scale <= 0 or s_scale <= 0
            or res_scale > 0 or missing):
        raise ValueError("gluon unit: takes an int8 unit of 128 channels and 7 taps with biases, an int8 Snake "
                         "output and no quantized skip")
    shapes = blocks()
    n_tiles = triton.cdiv(rows, BM)
    const = constants(tile, dilation)

    def desc(t: Any, name: str) -> Any:
        return TensorDescriptor.from_tensor(t, shapes[name], _layout(shapes[name], GL_TYPES[name]))

    w1_d, w2_d = desc(w1, "w1"), desc(w2, "w2")
    grid = (min(programs, triton.cdiv(n_tiles, const["CONSUMERS"])), )
    for b in range(batch):
        gluon_unit_kernel[grid](desc(x[b], "x"), w1_d, w2_d, desc(y[b], "y"), desc(s[b], "s"), y[b], s[b], w1_scale,
                                b1, alpha1, inv_beta1, w2_scale, b2, alpha2, inv_beta2, rows, n_tiles,
                                float(x_scale), 1.0 / mid_scale, float(mid_scale), 1.0 / s_scale, **const)


def compile_offline(tile: list[int] | tuple[int, ...], dilation: int) -> Any:
    """The kernel compiled for sm_90 without a GPU (Triton's GPUTarget), pointers 16-byte aligned."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    shapes = blocks()
    names = {gl.int8: "i8", gl.float16: "fp16"}
    sig = {f"{k}_desc": f"tensordesc<{names[t]}{shapes[k]},{_layout(shapes[k], t)!r}>" for k, t in GL_TYPES.items()}
    sig.update({"y_ptr": "*fp16", "s_ptr": "*i8"})
    sig.update({f"{n}_ptr": "*fp32" for n in ("w1_scale", "b1", "alpha1", "inv_beta1", "w2_scale", "b2", "alpha2",
                                              "inv_beta2")})
    sig.update({"M": "i32", "n_tiles": "i32", **{k: "fp32" for k in ("x_scale", "inv_mid_scale", "mid_scale",
                                                                     "inv_s_scale")}})
    const = constants(tile, dilation)
    sig.update({k: "constexpr" for k in const})
    aligned = {(i, ): [["tt.divisibility", 16]] for i, kind in enumerate(sig.values()) if kind.startswith("*")}
    return triton.compile(GluonASTSource(gluon_unit_kernel, sig, const, aligned),
                          target=GPUTarget("cuda", 90, 128), options={"num_warps": const["num_warps"]})
