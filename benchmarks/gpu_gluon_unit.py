"""The Gluon int8 unit kernel (benchmarks/experiments/gluon_unit.py) against the project's Triton
unit kernel on a GPU: outputs compared, then timed, at the shapes of blocks 3-4 (issue 36).

    python benchmarks/gpu_gluon_unit.py --out DIR [--rows N ...] [--variant V ...]

Operands are seeded random int8 tensors with scales that put the k=7 output near unit range
(what calibrated scales do), the decoder's own shapes: C = 128, k=7 with dilation 1, 3, 9, at
2,880,000 rows (block 4 of a 60 s decode; block 3 has half as many) and 480,000 (block 4 at 250
frames). The reference is kernels.triton_unit in the tiles the H100 tuner chose in run 12
(128x128x128x4x3 at block 4, 64x128x128x4x3 beside it). Each Gluon variant runs in a child
process with a time limit, so a kernel that hangs (Gluon's barriers are hand-written) costs
its limit, not the call. The child checks the variant's y and s against the reference
(kernels.op.TOLERANCES, plus the share that is bit-identical), then times every kernel in
turns: ROUNDS rounds, each kernel REPEATS calls per round, the residual stream restored from a
copy before each call outside the timed region; CUDA events; medians and the spread of the
round medians. Results go to DIR/results.json as each child ends.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "experiments"))

TRITON_TILES = ((128, 128, 128, 4, 3), (64, 128, 128, 4, 3))
ROWS = (2_880_000, 480_000)
DILATIONS = (1, 3, 9)
ROUNDS, REPEATS = 5, 10
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
    import gluon_unit

    gluon_unit.launch(o["x"], o["w1"], o["w1_scale"], o["b1"], o["alpha1"], o["inv_beta1"], o["w2"], o["w2_scale"],
                      o["b2"], o["alpha2"], o["inv_beta2"], y, s, taps=7, dilation=dilation, x_scale=o["x_scale"],
                      mid_scale=o["mid_scale"], s_scale=o["s_scale"], res_scale=0.0, variant=variant,
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
    """One variant at one length, each dilation: checked against the Triton kernel, then (timed)
    timed in turns with it."""
    import torch

    programs = 1 if SMOKE else torch.cuda.get_device_properties(0).multi_processor_count
    records = []
    for dilation in dilations:
        o = operands(rows, dilation)
        y_ref, s_ref = o["y0"].clone(), torch.empty_like(o["x"])
        run_triton(o, y_ref, s_ref, dilation, TRITON_TILES[0])
        y, s = o["y0"].clone(), torch.zeros_like(o["x"])
        began = time.perf_counter()
        run_gluon(o, y, s, dilation, variant, programs)
        sync()
        record = {"variant": variant, "rows": rows, "dilation": dilation,
                  "first_call_s": round(time.perf_counter() - began, 2), "check": compare(y, s, y_ref, s_ref)}
        del y_ref, s_ref
        if timed:
            record["ms"] = timings(o, y, s, dilation, variant, programs)
        records.append(record)
        print(json.dumps(record), flush=True)
    return records


def timings(o: dict, y, s, dilation: int, variant: str, programs: int) -> dict:
    import torch

    kernels = {f"triton {'x'.join(map(str, t))}": (lambda y, s, t=t: run_triton(o, y, s, dilation, t))
               for t in TRITON_TILES}
    kernels[f"gluon {variant}"] = lambda y, s: run_gluon(o, y, s, dilation, variant, programs)
    times = {name: [] for name in kernels}
    for _ in range(ROUNDS):
        for name, fn in kernels.items():
            fn(y, s)  # warm
            for _ in range(REPEATS):
                y.copy_(o["y0"])
                times[name].append(timed_ms(lambda: fn(y, s)))
    ms = {}
    for name, t in times.items():
        per_round = [sorted(t[r * REPEATS:(r + 1) * REPEATS])[REPEATS // 2] for r in range(ROUNDS)]
        ms[name] = {"median": round(sorted(t)[len(t) // 2], 4), "round_medians": [round(v, 4) for v in per_round]}
    return ms


def sync() -> None:
    import torch

    if not SMOKE:
        torch.cuda.synchronize()


def timed_ms(fn) -> float:
    """One call's milliseconds: CUDA events on the GPU (the copy queued before it is outside), the wall clock in
    a smoke run."""
    import torch

    if SMOKE:
        began = time.perf_counter()
        fn()
        return (time.perf_counter() - began) * 1e3
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
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
    import gluon_unit

    results = {"device": device(), "command": " ".join(sys.argv), "rounds": ROUNDS, "repeats": REPEATS, "runs": []}
    variants = args.variant or list(gluon_unit.VARIANTS)
    dilations = ",".join(map(str, args.dilation or DILATIONS))
    # a small first pass, every variant at once in its own process (it compiles them; the GPU's
    # cores are many): a kernel that hangs or computes wrongly is dropped before the long runs.
    # Then each length, one variant at a time, timed against the Triton kernel.
    def command(variant: str, rows: int, timed: bool) -> list[str]:
        return [sys.executable, __file__, "--out", str(out), "--child", variant, str(rows), dilations,
                "timed" if timed else "check"] + (["--smoke"] if SMOKE else [])

    def collect(variant: str, rows: int, proc: subprocess.Popen, began: float) -> list[dict]:
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, args.limit - (time.perf_counter() - began)))
            path = out / f"child_{variant}_{rows}.json"
            records = (json.loads(path.read_text()) if proc.returncode == 0 and path.exists() else
                       [{"variant": variant, "rows": rows, "error": (stderr or stdout)[-1500:]}])
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
            records = [{"variant": variant, "rows": rows, "error": f"no result in {args.limit:.0f} s",
                        "stdout": stdout[-800:]}]
        for record in records:
            record["child_wall_s"] = round(time.perf_counter() - began, 1)
            print(json.dumps(record), flush=True)
        results["runs"].extend(records)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        return records

    def start(variant: str, rows: int, timed: bool) -> subprocess.Popen:
        return subprocess.Popen(command(variant, rows, timed), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    began = time.perf_counter()
    check_rows = 99 if SMOKE else 4099
    procs = {variant: start(variant, check_rows, False) for variant in variants}
    for variant, proc in procs.items():
        if not all(r.get("check", {}).get("ok") for r in collect(variant, check_rows, proc, began)):
            variants.remove(variant)
    for rows in args.rows or ROWS:
        for variant in variants:
            collect(variant, rows, start(variant, rows, True), time.perf_counter())

if __name__ == "__main__":
    main()
