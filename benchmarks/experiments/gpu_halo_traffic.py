"""What would loading each k=7 input window once, instead of once per tap, buy the fp16 layers of 128 and 256
channels (issue 36)? A bound, timed on a GPU before anyone writes the kernel that needs it.

    python3 benchmarks/experiments/gpu_halo_traffic.py --out DIR     # on the GPU
    python3 benchmarks/experiments/gpu_halo_traffic.py --compile [--out DIR]   # no GPU: sm_90 registers, shared memory

Written to Triton 3.6's Gluon, the lent GPU's; run --compile with it (a side virtualenv, as for
benchmarks/sm90_unit.py) for results/gpu_units/halo_sm90_triton36.json. The project's Triton 3.9 refuses the
source (its Gluon API has moved).

Every kernel of this project reads a k=7 convolution's input once per tap: each tap's window of BM rows,
shifted by the dilation, comes by its own TMA load (kernels.triton_conv, kernels.triton_unit). At block 4 of a
60 s decode (2,880,000 rows, 128 channels, tile 128 x 128) a program moves 229 KB of input windows and 229 KB of
weights from L2 for its 29 MFLOP: about 10 GB per layer, which run 20's fastest plain-store layer (1.237 ms)
pulls at 8.3 TB/s, near the 9.2 TB/s Triton's plainest matmul reached at block 0 (gpu_gemm_ceiling.py). If L2
bandwidth is what holds these layers at 1.6-1.9x their floor, one halo tile per channel slice (BM + 6 x
dilation rows, each tap's window a row slice of it) would cut the input's share by 7. Neither Triton nor
Gluon can express that slice (a shared-memory subslice starts at a multiple of its own length; the Gluon unit
section of benchmarks/results/README.md), so it would take CUDA or inline PTX.

This asks whether that is worth writing. One Gluon kernel (TMA loads into rings of mbarrier-guarded buffers,
asynchronous wgmma with one group in flight, bias and an fp16 TMA store), in two modes that differ only in what
they load:
- `taps`: one TMA load of the input window per tap and channel slice, as the project's kernels do (the same
  L2 traffic); it computes the convolution (checked against im2col in fp32);
- `reuse`: one window per channel slice, used by all seven taps: the traffic of a halo tile. It computes
  x @ (sum of the taps' weights), checked against that product: the wrong convolution, the right traffic.
Beside them the project's layer kernel with a plain store (kernels.triton_conv, the tile gpu_gemm_ceiling.py
found fastest at 128 channels). Shapes: blocks 2-4 at 60 s (dilation 1). Timing: each kernel's median of
REPEATS launches (the kernels alone, gpu_units.kernel_ms), in ROUNDS rounds taking turns
(measure.timing.turns); the figure is the median over rounds, with the rounds' range. `reuse` against
`taps` in the same tile is the bound: the share of the layer's time that the per-tap input traffic
costs. DIR/results.json is written as each shape ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TAPS = 7
SHAPES = {"block.2": (360000, 256), "block.3": (1440000, 128), "block.4": (2880000, 128)}  # rows, channels at 60 s
TILES = ((128, 64, 4, 4), (128, 64, 8, 4), (128, 64, 8, 3), (128, 32, 8, 6), (64, 64, 4, 4))  # BM, BK, warps, stages
LAYER_TILE = (128, 128, 64, 4, 3)  # the layer kernel's fastest plain-store tile at 128 channels (run 20)
ROUNDS, REPEATS = 7, 5


@gluon.jit
def _issue(x_desc, w_desc, a_buf, w_buf, bar, m0, i, C: gl.constexpr, BK: gl.constexpr, REUSE: gl.constexpr,
           TAPS: gl.constexpr, DIL: gl.constexpr):
    """The loads of step i (channel slice i // TAPS, tap i % TAPS): its weights, and in `taps` mode its window."""
    c = i // TAPS
    t = i - c * TAPS
    if REUSE:
        mbarrier.expect(bar, w_desc.block_type.nbytes)
    else:
        mbarrier.expect(bar, w_desc.block_type.nbytes + x_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(x_desc, [m0 + (t - TAPS // 2) * DIL, c * BK], bar, a_buf)
    tma.async_copy_global_to_shared(w_desc, [0, t * C + c * BK], bar, w_buf)


@gluon.jit
def tap_conv_kernel(x_desc, w_desc, y_desc, bias_ptr, C: gl.constexpr, N: gl.constexpr, TAPS: gl.constexpr,
                    DIL: gl.constexpr, BM: gl.constexpr, BK: gl.constexpr, STAGES: gl.constexpr, REUSE: gl.constexpr,
                    num_warps: gl.constexpr):
    m0 = gl.program_id(0) * BM
    STEPS: gl.constexpr = (C // BK) * TAPS
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                     instr_shape=[16, N, 16])
    w_ring = gl.allocate_shared_memory(w_desc.dtype, [STAGES, N, BK], w_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    if REUSE:  # one window per channel slice, two slices in flight
        a_ring = gl.allocate_shared_memory(x_desc.dtype, [2, BM, BK], x_desc.layout)
        a_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for q in gl.static_range(2):
            mbarrier.init(a_bars.index(q), count=1)
    else:  # one window per step, beside its weights
        a_ring = gl.allocate_shared_memory(x_desc.dtype, [STAGES, BM, BK], x_desc.layout)
        a_bars = bars
    for q in gl.static_range(STAGES):
        mbarrier.init(bars.index(q), count=1)
    if REUSE:
        for q in gl.static_range(2):
            if q * TAPS < STEPS:
                mbarrier.expect(a_bars.index(q), x_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(x_desc, [m0, q * BK], a_bars.index(q), a_ring.index(q))
    for q in gl.static_range(STAGES - 1):
        if q < STEPS:
            _issue(x_desc, w_desc, a_ring.index(q % a_ring.shape[0]), w_ring.index(q), bars.index(q), m0, q, C, BK,
                   REUSE, TAPS, DIL)
    acc = gl.zeros((BM, N), dtype=gl.float32, layout=layout)
    for i in range(STEPS):
        s = i % STAGES
        c = i // TAPS
        mbarrier.wait(bars.index(s), (i // STAGES) & 1)
        if REUSE:
            mbarrier.wait(a_bars.index(c % 2), (c // 2) & 1)
            a = a_ring.index(c % 2)
        else:
            a = a_ring.index(s)
        acc = warpgroup_mma(a, w_ring.index(s).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
        # step i - 1's wgmma has finished: its buffers are free
        nxt = i + STAGES - 1
        if nxt < STEPS:
            ns = nxt % STAGES
            _issue(x_desc, w_desc, a_ring.index(ns % a_ring.shape[0]), w_ring.index(ns), bars.index(ns), m0, nxt,
                   C, BK, REUSE, TAPS, DIL)
        if REUSE:  # at a slice's first tap the slice before it is done: load the one after this
            if (i - c * TAPS == 0) & (c >= 1) & (c + 1 < C // BK):
                mbarrier.expect(a_bars.index((c + 1) % 2), x_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(x_desc, [m0, (c + 1) * BK], a_bars.index((c + 1) % 2),
                                                a_ring.index((c + 1) % 2))
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    cols = gl.arange(0, N, layout=gl.SliceLayout(0, layout))
    out = gl.allocate_shared_memory(y_desc.dtype, [BM, N], y_desc.layout)
    out.store((acc + gl.load(bias_ptr + cols)[None, :]).to(gl.float16))
    fence_async_shared()
    tma.async_copy_shared_to_global(y_desc, [m0, 0], out)
    tma.store_wait(pendings=0)


def _layout(block: list[int]) -> gl.NVMMASharedLayout:
    return gl.NVMMASharedLayout(swizzle_byte_width=min(128, block[-1] * 2), element_bitwidth=16, rank=2)


def _blocks(channels: int, tile: tuple[int, ...]) -> dict[str, list[int]]:
    bm, bk = tile[:2]
    return {"x_desc": [bm, bk], "w_desc": [channels, bk], "y_desc": [bm, channels]}


def launcher(x, w, bias, y, tile: tuple[int, ...], reuse: bool):
    """x [M, C], w [C, 7 C] (tap-major, K-major), y [M, C] fp16; a callable running the kernel."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    bm, bk, warps, stages = tile
    descs = [TensorDescriptor(t, list(t.shape), list(t.stride()), block, _layout(block))
             for t, block in zip((x, w, y), _blocks(x.shape[1], tile).values())]
    grid = (triton.cdiv(x.shape[0], bm),)
    return lambda: tap_conv_kernel[grid](*descs, bias, C=x.shape[1], N=w.shape[0], TAPS=TAPS, DIL=1, BM=bm, BK=bk,
                                         STAGES=stages, REUSE=reuse, num_warps=warps)


def compile_offline(channels: int, tile: tuple[int, ...], reuse: bool):
    """The kernel compiled for sm_90 with no GPU (Triton's GPUTarget)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    sig = {k: f"tensordesc<fp16{b},{_layout(b)!r}>" for k, b in _blocks(channels, tile).items()}
    sig["bias_ptr"] = "*fp32"
    bm, bk, warps, stages = tile
    const = dict(C=channels, N=channels, TAPS=TAPS, DIL=1, BM=bm, BK=bk, STAGES=stages, REUSE=reuse, num_warps=warps)
    sig.update({k: "constexpr" for k in const})
    return triton.compile(GluonASTSource(tap_conv_kernel, sig, const, {(3, ): [["tt.divisibility", 16]]}),
                          target=GPUTarget("cuda", 90, 128), options={"num_warps": warps})


def offline() -> list[dict]:
    from sm90_unit import cubin_usage

    rows = []
    for channels in sorted({c for _, c in SHAPES.values()}):
        for tile in TILES:
            for reuse in (False, True):
                row = {"channels": channels, "tile": "x".join(map(str, tile)), "mode": "reuse" if reuse else "taps"}
                try:
                    row.update(cubin_usage(compile_offline(channels, tile, reuse)))
                except Exception as exc:  # noqa: BLE001 (a tile that does not compile is a row of the table)
                    row["error"] = str(exc).splitlines()[0][:200]
                print(row, flush=True)
                rows.append(row)
    return rows


def shape_run(rows: int, channels: int) -> dict:
    import torch

    from gpu_gemm_ceiling import im2col, in_turns, layer

    gen = torch.Generator(device="cuda").manual_seed(0)
    k, f16 = TAPS * channels, torch.float16
    x = torch.randn(1, rows, channels, device="cuda", dtype=f16, generator=gen)
    w = (torch.randn(channels, k, device="cuda", dtype=f16, generator=gen) / k ** 0.5).contiguous()
    bias = torch.randn(channels, device="cuda", generator=gen)
    y = torch.empty(1, rows, channels, device="cuda", dtype=f16)
    w_sum = w.float().reshape(channels, TAPS, channels).sum(1)
    want = {False: lambda: im2col(x).float() @ w.float().T + bias, True: lambda: x[0].float() @ w_sum.T + bias}
    fns = {"layer " + "x".join(map(str, LAYER_TILE)): layer(x, w, bias, None, None, y, None, LAYER_TILE)}
    check, failed = {}, {}
    for tile in TILES:
        for reuse in (False, True):
            name = f"{'reuse' if reuse else 'taps'} {'x'.join(map(str, tile))}"
            try:
                fn = launcher(x[0], w, bias, y[0], tile, reuse)
                fn()
                torch.cuda.synchronize()
                ref = want[reuse]()
                check[name] = round(float((y[0].float() - ref).abs().max() / ref.abs().max()), 6)
                fns[name] = fn
            except Exception as exc:  # noqa: BLE001 (out of shared memory, a refused layout: recorded)
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            torch.cuda.empty_cache()
    timed = in_turns(fns, 2.0 * rows * channels * k, ROUNDS, REPEATS)
    bound = {}
    for tile in TILES:
        t = "x".join(map(str, tile))
        if f"taps {t}" in timed and f"reuse {t}" in timed:
            bound[t] = round(timed[f"reuse {t}"]["ms"] / timed[f"taps {t}"]["ms"], 3)
    return {"rows": rows, "channels": channels, "timed": timed, "check": check, "failed": failed,
            "reuse_over_taps": bound}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="run on the GPU, results here")
    p.add_argument("--compile", action="store_true", help="compile every mode and tile for sm_90 (no GPU needed)")
    args = p.parse_args()
    if args.compile:
        rows = offline()
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "sm90.json").write_text(json.dumps({"triton": triton.__version__, "rows": rows}, indent=1))
        return
    if not args.out:
        p.error("--out DIR (on a GPU) or --compile")
    from gpu_gemm_ceiling import run_shapes
    from gpu_units import CFG

    from vae_engines.core import device as devices
    from vae_engines.core.env import fingerprint

    args.out.mkdir(parents=True, exist_ok=True)
    results = {"machine": fingerprint(), "device": devices.describe(CFG.device), "triton": triton.__version__,
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiles": TILES, "rounds": ROUNDS, "repeats": REPEATS}
    run_shapes(args.out, results, SHAPES, shape_run,
               lambda r: ({n: (v["ms"], v["tflops"]) for n, v in r["timed"].items()}, r["reuse_over_taps"], r["check"],
                          r["failed"]))


if __name__ == "__main__":
    main()
