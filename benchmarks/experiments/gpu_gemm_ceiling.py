"""How far are the fp16 k=7 layers from what Triton and cuBLAS reach at the same GEMM (issue 36)?

    python3 benchmarks/experiments/gpu_gemm_ceiling.py --out DIR [--smoke]

Run 20's layer table puts the fp16 k=7 layers at 1.6-1.9x their floor: block 0's at about 450 TFLOP/s,
where cuBLAS multiplies the same GEMM (15000 x 1024 x 7168) at 750. Widening the tuner's tiles did not
close it (runs 19-20). Before more kernel work, this asks where the gap lies. At each block's 60 s
shape (rows M, C channels in and out, K = 7 C), fp16 operands, random data:
- `cublas`: torch.matmul on a contiguous [M, 7C] operand, the GEMM alone;
- `im2col+cublas`: the convolution through cuBLAS: the input's seven shifted windows copied into that
  operand, then the GEMM (what replacing the layer kernel by cuBLAS would cost, before its epilogue);
- `triton <tile>`: the plainest Triton TMA matmul (2-D descriptors, column blocks fastest as in the
  layer kernel, fp16 store): Triton's own ceiling at this shape and tile;
- `layer <tile>`: the project's layer kernel (kernels.triton_conv) as a convolution with a bias and a
  plain fp16 store: the cost of the implicit GEMM's 3-D loads;
- `layer+snake <tile>`: the same writing the next layer's input through Snake, as the engines run it.

Tiles: the tuner's fp16 candidates and four more. Timing: each variant's median of 5 launches between
CUDA events, in 5 rounds taking turns (measure.timing.turns); the figure is the median over rounds,
with the rounds' range. Since 2026-12-08 each launch is timed behind a GPU spin, the kernels alone
(core.clock.kernel_ms); run 20's record (h100_run20_gemm/) timed them from an idle GPU, the host's
launch work included (small beside these 0.3-7.7 ms kernels). Check: the first tile of the Triton
matmul and of the layer's plain store against the same product in fp32, as the largest difference over
the largest output.
DIR/results.json is written as each shape ends, DIR/table.md at the end.
--smoke runs it on the CPU (Triton's interpreter, small shapes): it checks the script only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_units import CFG, kernel_ms  # noqa: E402

from vae_engines.compiled.tune import CANDIDATES  # noqa: E402
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.kernels import triton_conv  # noqa: E402
from vae_engines.measure.timing import turns  # noqa: E402

SHAPES = {"block.0": (15000, 1024), "block.1": (90000, 512), "block.2": (360000, 256), "block.3": (1440000, 128),
          "block.4": (2880000, 128)}  # a k=7 layer's rows and channels at 60 s (1500 frames)
TILES = CANDIDATES["fp16"] + ((128, 256, 64, 8, 4), (256, 128, 64, 8, 3), (128, 128, 64, 4, 3), (128, 128, 128, 8, 3))
TAPS = 7
ROUNDS, REPEATS = 5, 5


@triton.jit
def matmul_kernel(a_desc, b_desc, c_desc, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    tile_id = tl.program_id(0)
    num_n = tl.cdiv(N, BN)
    m0, n0 = (tile_id // num_n) * BM, (tile_id % num_n) * BN
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in tl.range(0, tl.cdiv(K, BK)):
        acc = tl.dot(a_desc.load([m0, k * BK]), b_desc.load([n0, k * BK]).T, acc)
    c_desc.store([m0, n0], acc.to(tl.float16))


def triton_matmul(a: torch.Tensor, w: torch.Tensor, c: torch.Tensor, tile: tuple[int, ...]):
    bm, bn, bk, warps, stages = tile
    (m, k), n = a.shape, w.shape[0]
    a_desc, w_desc, c_desc = (triton_conv._desc(t, block) for t, block in ((a, [bm, bk]), (w, [bn, bk]), (c, [bm, bn])))
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    return lambda: matmul_kernel[grid](a_desc, w_desc, c_desc, m, n, k, BM=bm, BN=bn, BK=bk, num_warps=warps,
                                       num_stages=stages)


def layer(x, w, bias, alpha, inv_beta, y, s, tile):
    return lambda: triton_conv.launch(x, w, None, bias, alpha, inv_beta, y, s, taps=TAPS, dilation=1, padding=TAPS // 2,
                                      stride=0, x_scale=1.0, s_scale=0.0, res_scale=0.0, residual=False, audio=False,
                                      tile=tile)


def im2col(x: torch.Tensor) -> torch.Tensor:
    """x [1, M, C] -> [M, 7C]: row m holds input rows m-3 .. m+3 (zeros past the edges)."""
    _, m, c = x.shape
    padded = torch.nn.functional.pad(x[0], (0, 0, TAPS // 2, TAPS // 2))
    return padded.as_strided((m, TAPS, c), (c, c, 1)).reshape(m, TAPS * c)


def in_turns(fns: dict, flops: float, rounds: int, repeats: int) -> dict:
    """Each callable's median of `repeats` launches (the kernels alone: gpu_units.kernel_ms), in `rounds`
    rounds taking turns (measure.timing.turns): the median over rounds, the rounds' range, and TFLOP/s at
    that median."""
    ms: dict[str, list[float]] = {n: [] for n in fns}
    for r in range(rounds):
        for name in turns(list(fns), r):
            ms[name].append(kernel_ms(fns[name], repeats=repeats, warm=False))
    return {n: {"ms": round(statistics.median(v), 4), "rounds_ms": [round(min(v), 4), round(max(v), 4)],
                "tflops": round(flops / statistics.median(v) / 1e9, 1)} for n, v in ms.items()}


def run_shapes(out: Path, results: dict, shapes: dict, shape_run, show) -> None:
    """shape_run(rows, channels) for each of `shapes`, into results["shapes"] with its seconds; out/results.json
    rewritten as each ends, show(name, record) printed."""
    results["shapes"] = {}
    for name, (rows, channels) in shapes.items():
        began = time.perf_counter()
        results["shapes"][name] = shape_run(rows, channels)
        results["shapes"][name]["seconds"] = round(time.perf_counter() - began, 1)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(name, show(results["shapes"][name]), flush=True)
        if CFG.device.type == "cuda":
            torch.cuda.empty_cache()


def shape_run(rows: int, channels: int) -> dict:
    dev, f16 = CFG.device, torch.float16
    gen = torch.Generator(device=dev).manual_seed(0)
    k = TAPS * channels
    x = torch.randn(1, rows, channels, device=dev, dtype=f16, generator=gen)
    w = (torch.randn(channels, k, device=dev, dtype=f16, generator=gen) / k ** 0.5).contiguous()
    a = torch.randn(rows, k, device=dev, dtype=f16, generator=gen)
    bias = torch.randn(channels, device=dev, generator=gen)
    alpha, inv_beta = (torch.rand(channels, device=dev, generator=gen) + 0.5 for _ in range(2))
    y, s, c = (torch.empty(1, rows, channels, device=dev, dtype=f16) for _ in range(3))
    fns = {"cublas": lambda: a @ w.T, "im2col+cublas": lambda: im2col(x) @ w.T}
    for tile in TILES:
        if tile[1] > channels or channels % tile[2]:
            continue
        name = "x".join(map(str, tile))
        fns[f"triton {name}"] = triton_matmul(a, w, c[0], tile)
        fns[f"layer {name}"] = layer(x, w, bias, None, None, y, None, tile)
        fns[f"layer+snake {name}"] = layer(x, w, bias, alpha, inv_beta, None, s, tile)
    failed = {}
    for name, fn in list(fns.items()):  # compile and warm each; a tile that cannot run is reported
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 (out of shared memory, a refused descriptor: recorded)
            failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            del fns[name]
    check = {}  # each kind's first tile against the same product in fp32 (that it ran, not its accuracy)
    for kind, out, want in (("triton", c[0], lambda: a.float() @ w.float().T),
                            ("layer", y[0], lambda: im2col(x).float() @ w.float().T + bias)):
        first = next((n for n in fns if n.startswith(kind + " ")), None)
        if first:
            fns[first]()
            ref = want().to(f16).float()
            check[first] = round(float((out.float() - ref).abs().max() / ref.abs().max()), 6)
    flops = 2.0 * rows * channels * k
    timed = in_turns(fns, flops, ROUNDS, REPEATS)
    return {"rows": rows, "channels": channels, "gemm": f"{rows}x{channels}x{k}", "gflop": round(flops / 1e9, 2),
            "timed": timed, "failed": failed, "check": check}


def best(timed: dict, prefix: str) -> tuple[str, dict] | tuple[None, None]:
    rows = [(n, v) for n, v in timed.items() if n.startswith(prefix + " ")]
    return min(rows, key=lambda nv: nv[1]["ms"]) if rows else (None, None)


def table(shapes: dict) -> str:
    lines = ["| layer (GEMM) | cuBLAS TFLOP/s | im2col+cuBLAS ms | best Triton matmul | best layer, plain store | "
             "best layer + Snake (as shipped) |", "|---|---|---|---|---|---|"]
    for name, r in shapes.items():
        t = r["timed"]
        cells = []
        for prefix in ("triton", "layer", "layer+snake"):
            n, v = best(t, prefix)
            cells.append(f"{v['tflops']} TFLOP/s, {v['ms']} ms ({n.split(' ')[1]})" if n else "-")
        lines.append(f"| {name} ({r['gemm']}) | {t['cublas']['tflops']} | {t['im2col+cublas']['ms']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--smoke", action="store_true", help="a CPU check of the script (figures mean nothing)")
    args = p.parse_args()
    global SHAPES, TILES, ROUNDS, REPEATS
    if args.smoke:
        CFG.device = torch.device("cpu")
        SHAPES, TILES, ROUNDS, REPEATS = {"block.3": (96, 128)}, TILES[:1], 2, 1
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"machine": fingerprint(), "device": devices.describe(CFG.device),
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "tiles": TILES, "rounds": ROUNDS,
               "repeats": REPEATS}
    run_shapes(args.out, results, SHAPES, shape_run,
               lambda r: (r["gemm"], {n: v["tflops"] for n, v in r["timed"].items()}, r["failed"], r["check"]))
    (args.out / "table.md").write_text(table(results["shapes"]))
    print(table(results["shapes"]))


if __name__ == "__main__":
    main()
