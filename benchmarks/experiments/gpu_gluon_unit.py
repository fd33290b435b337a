"""The Gluon int8 unit kernel (experiments/gluon_unit_kernel.py) against the project's Triton
unit kernel on a GPU: outputs compared, then timed, at the shapes of blocks 3-4 (issue 36). Its
H100 run is benchmarks/results/gluon/h100_timing/ (the kernel lost at every shape and was
withdrawn from the package).

    python benchmarks/experiments/gpu_gluon_unit.py --out DIR [--rows N ...] [--variant V ...]

Operands are seeded random int8 tensors with scales that put the k=7 output near unit range
(what calibrated scales do), the decoder's own shapes: C = 128, k=7 with dilation 1, 3, 9, at
2,880,000 rows (block 4 of a 60 s decode; block 3 has half as many) and 480,000 (block 4 at 250
frames). The reference is kernels.triton_unit in the tiles the H100 tuner chose in run 12
(128x128x128x4x3 at block 4, 64x128x128x4x3 beside it). Each Gluon variant runs in a child
process with a time limit, so a kernel that hangs (Gluon's barriers are hand-written) costs
its limit, not the call. The child checks the variant's y and s against the reference
(kernels.op.TOLERANCES, plus the share that is bit-identical) on every multiprocessor and on a
few programs (each consumer walking many tiles), then times every kernel in turns: ROUNDS
rounds, each kernel REPEATS calls back to back between CUDA events; the median round and every
round's figure. Every record goes to stdout and to DIR/results.json as each child ends; a
child's files are removed once collected, except the log of one that failed (the device tool
brings back 8 files a call). DIR/winners.txt names the variants faster than both Triton tiles
everywhere.

--smoke runs the script's plumbing on the CPU (Triton's interpreter, 300 rows, the second Triton
tile standing in for the Gluon kernel, which has no interpreter): its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TRITON_TILES = ((128, 128, 128, 4, 3), (64, 128, 128, 4, 3))
ROWS = (2_880_000, 480_000)
DILATIONS = (1, 3, 9)
ROUNDS, REPEATS = 5, 10
FEW = 3  # programs of the second check
SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    ROWS, ROUNDS, REPEATS = (300, ), 1, 2
DEVICE = "cpu" if SMOKE else "cuda"


def operands(rows: int, dilation: int, seed: int = 0) -> dict:
    import torch

    g = torch.Generator(device=DEVICE).manual_seed(seed * 1000 + dilation)
    c = 128

    def ints(*shape):
        return torch.randint(-127, 128, shape, generator=g, device=DEVICE, dtype=torch.int8)

    def unit(*shape):
        return torch.rand(shape, generator=g, device=DEVICE)

    x_scale, mid_scale, s_scale = 0.02, 4.0 / 127, 6.0 / 127
    # k=7 sums 896 products of int8 uniform in [-127, 127]: std about 161,000; the k=1, 128 of
    # int8 codes of about std 32 against 73: about 26,000. Scales that bring both near unit std.
    w1_scale = (1.0 / 161_000 / x_scale) * (0.5 + unit(c))
    w2_scale = (1.0 / 26_000 / mid_scale) * (0.5 + unit(c))
    alpha1, alpha2 = 0.5 + unit(c), 0.5 + unit(c)
    return {"x": ints(1, rows, c), "w1": ints(c, 7 * c), "w2": ints(c, c),
            "y0": torch.randn((1, rows, c), generator=g, device=DEVICE).half(),
            "w1_scale": w1_scale, "b1": 0.1 * torch.randn(c, generator=g, device=DEVICE), "alpha1": alpha1,
            "inv_beta1": 1.0 / (alpha1 + 1e-9), "w2_scale": w2_scale,
            "b2": 0.1 * torch.randn(c, generator=g, device=DEVICE), "alpha2": alpha2,
            "inv_beta2": 1.0 / (alpha2 + 1e-9), "x_scale": x_scale, "mid_scale": mid_scale, "s_scale": s_scale}


def run_triton(o: dict, y, s, dilation: int, tile) -> None:
    from vae_engines.kernels import triton_unit

    triton_unit.launch(o["x"], o["w1"], o["w1_scale"], o["b1"], o["alpha1"], o["inv_beta1"], o["w2"], o["w2_scale"],
                       o["b2"], o["alpha2"], o["inv_beta2"], y, s, taps=7, dilation=dilation, x_scale=o["x_scale"],
                       mid_scale=o["mid_scale"], s_scale=o["s_scale"], res_scale=0.0, tile=tile)


def run_gluon(o: dict, y, s, dilation: int, variant: str, programs: int) -> None:
    if SMOKE:
        return run_triton(o, y, s, dilation, TRITON_TILES[1])
    import gluon_unit_kernel as gluon_unit

    gluon_unit.launch(o["x"], o["w1"], o["w1_scale"], o["b1"], o["alpha1"], o["inv_beta1"], o["w2"], o["w2_scale"],
                      o["b2"], o["alpha2"], o["inv_beta2"], y, s, taps=7, dilation=dilation, x_scale=o["x_scale"],
                      mid_scale=o["mid_scale"], s_scale=o["s_scale"], res_scale=0.0, tile=gluon_unit.TILES[variant],
                      programs=programs)


def compare(y, s, y_ref, s_ref) -> dict:
    import torch

    from vae_engines.kernels.op import TOLERANCES

    tol = TOLERANCES["fp16"]
    yf, yr = y.float(), y_ref.float()
    finite = bool(torch.isfinite(yf).all())
    y_ok = finite and bool(((yf - yr).abs() <= tol["rtol"] * yr.abs() + tol["atol"]).all())
    steps = (s.int() - s_ref.int()).abs()
    share = float((steps > 0).float().mean())
    s_ok = int(steps.max()) <= TOLERANCES["int8"]["max_step"] and share <= TOLERANCES["int8"]["max_share"]
    return {"ok": bool(y_ok and s_ok), "y_bitwise_share": float((y == y_ref).float().mean()),
            "y_max_abs_diff": float((yf - yr).abs().max()), "s_share_off": share, "s_max_step": int(steps.max())}


def child(variant: str, rows: int, dilations: list[int], timed: bool) -> list[dict]:
    """One variant at one length, each dilation: checked against the Triton kernel, on every
    multiprocessor and on FEW programs (each consumer then walks many tiles: the persistent loop,
    ring slots reused across tiles, the next residual tile's load), then (timed) timed in turns
    with it."""
    import torch

    programs = 1 if SMOKE else torch.cuda.get_device_properties(0).multi_processor_count
    records = []
    for dilation in dilations:
        o = operands(rows, dilation)
        y_ref, s_ref = o["y0"].clone(), torch.empty_like(o["x"])
        run_triton(o, y_ref, s_ref, dilation, TRITON_TILES[0])
        record = {"variant": variant, "rows": rows, "dilation": dilation}
        for name, n in (("check", programs), ("check_few_programs", FEW)):
            y, s = o["y0"].clone(), torch.zeros_like(o["x"])
            began = time.perf_counter()
            run_gluon(o, y, s, dilation, variant, n)
            sync()
            record[f"{name}_first_call_s"] = round(time.perf_counter() - began, 2)
            record[name] = compare(y, s, y_ref, s_ref)
        record["ok"] = record["check"]["ok"] and record["check_few_programs"]["ok"]
        del y_ref, s_ref
        if timed:
            record["ms"] = timings(o, y, s, dilation, variant, programs)
        records.append(record)
        print(json.dumps(record), flush=True)
    return records


def timings(o: dict, y, s, dilation: int, variant: str, programs: int) -> dict:
    """Per-call milliseconds of each kernel: ROUNDS rounds taking turns, each REPEATS calls back to
    back between one pair of CUDA events (the launches' host work overlaps the kernels, as in a
    decode); the residual stream restored from its copy before each round (it grows by the unit's
    output at every call meanwhile, far from fp16's range)."""
    kernels = {f"triton {'x'.join(map(str, t))}": (lambda t=t: run_triton(o, y, s, dilation, t))
               for t in TRITON_TILES}
    kernels[f"gluon {variant}"] = lambda: run_gluon(o, y, s, dilation, variant, programs)
    rounds: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(ROUNDS):
        for name, fn in kernels.items():
            y.copy_(o["y0"])
            fn()  # warm
            rounds[name].append(timed_ms(fn, REPEATS) / REPEATS)
    return {name: {"median": round(sorted(t)[len(t) // 2], 4), "rounds": [round(v, 4) for v in t]}
            for name, t in rounds.items()}


def sync() -> None:
    import torch

    if not SMOKE:
        torch.cuda.synchronize()


def timed_ms(fn, n: int) -> float:
    """Milliseconds of n calls of fn back to back: CUDA events on the GPU, the wall clock in a smoke run."""
    import torch

    if SMOKE:
        began = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - began) * 1e3
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def device() -> dict:
    import torch
    import triton

    if SMOKE:
        return {"name": "cpu (smoke)", "torch": torch.__version__, "triton": triton.__version__}

    p = torch.cuda.get_device_properties(0)
    return {"name": p.name, "sms": p.multi_processor_count, "torch": torch.__version__, "cuda": torch.version.cuda,
            "triton": triton.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, action="append", default=None)
    p.add_argument("--dilation", type=int, action="append", default=None)
    p.add_argument("--variant", action="append", default=None)
    p.add_argument("--limit", type=float, default=120.0, help="seconds a child may take")
    p.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="the plumbing on the CPU; figures mean nothing")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        variant, rows, dilations, timed = args.child
        records = child(variant, int(rows), [int(d) for d in dilations.split(",")], timed == "timed")
        (out / f"child_{variant}_{rows}.json").write_text(json.dumps(records, indent=1) + "\n")
        return
    from gluon_unit_kernel import TILES

    results = {"device": device(), "command": " ".join(sys.argv), "rounds": ROUNDS, "repeats": REPEATS, "runs": []}
    variants = args.variant or list(TILES)
    dilations = ",".join(map(str, args.dilation or DILATIONS))
    # a small first pass, every variant at once in its own process (it compiles them; the GPU's
    # cores are many): a kernel that hangs or computes wrongly is dropped before the long runs.
    # Then each length, one variant at a time, timed against the Triton kernel.
    def command(variant: str, rows: int, timed: bool) -> list[str]:
        return [sys.executable, __file__, "--out", str(out), "--child", variant, str(rows), dilations,
                "timed" if timed else "check"] + (["--smoke"] if SMOKE else [])

    def log_of(variant: str, rows: int) -> Path:
        return out / f"child_{variant}_{rows}.log"

    def collect(variant: str, rows: int, proc: subprocess.Popen, began: float) -> list[dict]:
        path = out / f"child_{variant}_{rows}.json"
        try:
            proc.wait(timeout=max(1.0, args.limit - (time.perf_counter() - began)))
            records = (json.loads(path.read_text()) if proc.returncode == 0 and path.exists() else
                       [{"variant": variant, "rows": rows, "error": log_of(variant, rows).read_text()[-1500:]}])
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            records = [{"variant": variant, "rows": rows, "error": f"no result in {args.limit:.0f} s",
                        "log": log_of(variant, rows).read_text()[-800:]}]
        path.unlink(missing_ok=True)  # held in results.json
        if all(r.get("ok") for r in records):
            log_of(variant, rows).unlink(missing_ok=True)
        for record in records:
            record["child_wall_s"] = round(time.perf_counter() - began, 1)
            print(json.dumps(record), flush=True)
        results["runs"].extend(records)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        return records

    def start(variant: str, rows: int, timed: bool) -> subprocess.Popen:
        with log_of(variant, rows).open("w") as log:  # a file, not a pipe: a long error cannot block the child
            return subprocess.Popen(command(variant, rows, timed), stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})

    began = time.perf_counter()
    check_rows = 99 if SMOKE else 4099
    procs = {variant: start(variant, check_rows, False) for variant in variants}
    for variant, proc in procs.items():
        if not all(r.get("ok") for r in collect(variant, check_rows, proc, began)):
            variants.remove(variant)
    winners = set(variants)
    for rows in args.rows or ROWS:
        for variant in variants:
            for record in collect(variant, rows, start(variant, rows, True), time.perf_counter()):
                ms = record.get("ms", {})
                gluon = ms.get(f"gluon {variant}", {}).get("median")
                best = min((v["median"] for k, v in ms.items() if k.startswith("triton")), default=None)
                if not record.get("ok") or gluon is None or best is None or gluon >= best:
                    winners.discard(variant)
    # the variants checked at every length and faster than both Triton tiles at every length and
    # dilation
    (out / "winners.txt").write_text(",".join(v for v in variants if v in winners) + "\n")


if __name__ == "__main__":
    main()
