"""FP8 (e4m3) beside int8 and fp16 in the fused layer kernel, layer by layer (issue 36, item 5).

    python benchmarks/gpu_fp8_layers.py --out DIR [--frames 1500] [--smoke]

Why: Hopper's tensor cores run fp8 and int8 at the same peak rate (the H100's data sheet: 1,979
dense TFLOP/s and TOPS), and cuBLAS reaches more with fp8 than with int8 at this decoder's GEMM
shapes (issue 36: `torch._scaled_mm` 1,376 -> 593 TFLOP/s against `_int_mm` 859 -> 478 TOPS).
Whether fp8 pays in *this project's* kernel -- which already runs its int8 k=7 layers at
514-804 TOPS -- is a measurement, and so is what it costs in quality (the CPU side:
benchmarks/experiments/fp8_quality.py).

Every layer of the full-size seeded ACE-Step 1.5 decoder at a 60 s decode's rows (1500 latent
frames), run by kernels.triton_conv.launch -- the engines' own kernel -- with fp16, int8 and
fp8 operands (each writing its next layer's input in its own type: fp16, int8, fp8; fp8 twice:
`fp8` promotes the tensor cores' reduced-precision sum to fp32 every BK products, `fp8_fast`
never, Triton's sm_90 default), every candidate tile of compiled.tune for that kind (fp8 takes
int8's: the same bytes per element), each timed as the median of 10 calls after 2 (CUDA
events), the fastest tile kept. A check first: one k=7 and one k=1 layer, int8 and fp8, against
the reference (CPU, fp32). Values are random within range; a tensor core's speed does not
depend on them.

Writes DIR/results.json (every tile's time) and DIR/summary.md (per layer and per kind of
layer: each kind's best time, TFLOP/s, fp8 / int8). --smoke runs a few layers of the
shipped small model on the CPU under Triton's interpreter: it checks the script; its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

if "--smoke" in sys.argv:  # Triton reads it at import
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_engines.compiled.tune import CANDIDATES, layer_frames, time_call  # noqa: E402
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.params import ModelParams  # noqa: E402
from vae_engines.kernels import reference, triton_conv  # noqa: E402
from vae_engines.kernels.op import TOLERANCES  # noqa: E402
from vae_engines.model.fused import FusedDecoder  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

FP8 = torch.float8_e4m3fn
KINDS = {"fp16": torch.float16, "int8": torch.int8, "fp8": FP8, "fp8_fast": FP8}
FP8_ACC = {"fp8_fast": 0}  # fp8: the sum promoted to fp32 every BK products (launch's default); fp8_fast: never
LIMIT = {torch.int8: 127.0, FP8: 448.0}


def operands(layer, rows: int, kind: str, device, gen) -> dict:
    """A layer's launch arguments for one kind: random input of `rows` rows within range,
    weights quantized per output channel (int8, fp8) or fp16, outputs allocated."""
    dtype = KINDS[kind]
    weight = layer.weight.float() if layer.weight.is_floating_point() else layer.weight.float() * layer.w_scale[:, None]
    weight = weight.to(device)
    n, k = weight.shape
    channels = k // layer.spec.taps
    x = torch.randn(1, rows, channels, generator=gen, device=device)
    w_scale = None
    if dtype in LIMIT:
        w_scale = weight.abs().amax(dim=1).clamp_min(1e-12) / LIMIT[dtype]
        weight = reference.quantize(weight / w_scale[:, None], 1.0, dtype)
        x = reference.quantize(x, 4.0 / LIMIT[dtype], dtype)
    else:
        weight, x = weight.half(), x.half()
    s = layer.spec
    out_rows = rows * s.stride if s.stride else rows
    y = None
    if s.residual:
        y = torch.randn(1, rows, n, generator=gen, device=device).half()
    elif s.store_y:
        y = (torch.empty(1, n // s.stride if s.stride else n, out_rows, device=device) if s.audio
             else torch.empty(1, rows, n, dtype=torch.float16, device=device))
    snake = layer.alpha is not None
    out = {"x": x, "weight": weight.contiguous(), "w_scale": w_scale,
           "bias": None if layer.bias is None else layer.bias.to(device),
           "alpha": layer.alpha.to(device) if snake else None, "inv_beta": layer.inv_beta.to(device) if snake else None,
           "y": y, "s": torch.empty(1, rows, n, dtype=dtype, device=device) if snake else None}
    out["kw"] = dict(fp8_acc=FP8_ACC.get(kind), taps=s.taps, dilation=s.dilation, padding=s.padding, stride=s.stride,
                     x_scale=4.0 / LIMIT[dtype] if dtype in LIMIT else 0.0, s_scale=0.05 if dtype in LIMIT else 0.0,
                     res_scale=0.0, residual=s.residual, audio=s.audio)
    return out


def run(ops: dict, tile) -> None:
    triton_conv.launch(ops["x"], ops["weight"], ops["w_scale"], ops["bias"], ops["alpha"], ops["inv_beta"], ops["y"],
                       ops["s"], tile=tuple(tile), **ops["kw"])


def tiles_for(layer, kind: str) -> list[tuple]:
    """compiled.tune's candidates of the kind (fp8: int8's), fitted to the layer as tune does."""
    n, k = layer.weight.shape
    channels = k // layer.spec.taps
    out = []
    for bm, bn, bk, warps, stages in CANDIDATES["fp16" if kind == "fp16" else "int8"]:
        bk = min(bk, channels)
        bn = min(bn, max(16, 1 << (n - 1).bit_length()))
        if channels % bk or (layer.spec.stride and (n // 2) % bn) or bk * (2 if kind == "fp16" else 1) < 16:
            continue
        if (bm, bn, bk, warps, stages) not in out:
            out.append((bm, bn, bk, warps, stages))
    return out


def codes(t: torch.Tensor) -> torch.Tensor:
    """int8 values, or float8 e4m3fn codes as signed ordinals (sign-magnitude bits: adjacent
    representable values differ by 1, +0 and -0 both 0), as int32."""
    if t.dtype == torch.int8:
        return t.int()
    bits = t.view(torch.uint8).int()
    return torch.where(bits >= 128, -(bits - 128), bits)


def check(layer, rows: int, kind: str, device, gen) -> dict:
    """The kernel against the reference (on the CPU, fp32) on the same operands: the share of
    next-input elements that differ, and by how many representable steps at most
    (TOLERANCES['int8']: 1 step, in <= 1%), the largest such value among them; and the layer's
    fp16 output y against the reference's (TOLERANCES['fp16']). Snake between the two can turn
    one fp16 step of y into several steps of the next input where its slope is steep, so y
    is where an accumulation's precision shows."""
    ops = operands(layer, rows, kind, device, gen)
    stream = None if ops["y"] is None or not ops["kw"]["residual"] else ops["y"].clone()
    kw = {k: v for k, v in ops["kw"].items() if k in ("taps", "dilation", "padding", "stride", "x_scale", "res_scale")}
    v = reference.layer_output(ops["x"].cpu(), ops["weight"].cpu(), ops["w_scale"].cpu(),
                               None if ops["bias"] is None else ops["bias"].cpu(),
                               None if stream is None else stream.cpu(), **kw)
    want = reference.snake_input(v, ops["alpha"].cpu(), ops["inv_beta"].cpu(), ops["kw"]["s_scale"], KINDS[kind])
    if ops["y"] is None:  # store the layer's output too: the accumulation itself, before Snake amplifies it
        ops["y"] = torch.empty(ops["s"].shape, dtype=torch.float16, device=device)
    run(ops, tiles_for(layer, kind)[0])
    y_err = (ops["y"].cpu().float() - v.half().float()).abs()
    bound = TOLERANCES["fp16"]["rtol"] * v.half().float().abs() + TOLERANCES["fp16"]["atol"]
    got = ops["s"].cpu()
    steps = (codes(got) - codes(want)).abs()
    off = steps > 0
    share = float(off.float().mean())
    worst = int(steps.max())
    return {"layer": layer.spec.name, "kind": kind, "rows": rows, "share_off": round(share, 5), "max_steps": worst,
            "largest_value_off": float(want.float().abs()[off].max()) if bool(off.any()) else 0.0,
            "y_share_beyond_fp16_tolerance": round(float((y_err > bound).float().mean()), 6),
            "y_max_error_over_max_abs": float(y_err.max() / v.abs().max()),
            "ok": worst <= TOLERANCES["int8"]["max_step"] and share <= TOLERANCES["int8"]["max_share"]}


def summarize(rows: list[dict]) -> str:
    def group(name: str) -> str:
        spec = name.rsplit(".", 1)[-1]
        if "conv_t" in spec:
            return "upsamplers"
        if ".res_unit" in name:
            return "k=7 (units)" if spec == "conv1" else "k=1 (units)"
        return "first and last conv"

    lines = ["| layer | rows | C -> N | taps | fp16 ms | int8 ms | fp8 ms | fp8_fast ms | fp8 / int8 | fp8 TFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    sums: dict[str, dict[str, float]] = {}
    for r in rows:
        best = {k: r["best"][k]["ms"] if r["best"].get(k) else None for k in KINDS}
        ratio = f"{best['fp8'] / best['int8']:.2f}" if best["fp8"] and best["int8"] else "-"
        tflops = f"{r['flop'] / best['fp8'] / 1e9:.0f}" if best["fp8"] else "-"
        lines.append(f"| {r['layer']} | {r['rows']} | {r['c_in']} -> {r['n']} | {r['taps']} | "
                     + " | ".join(f"{best[k]:.3f}" if best[k] else "-" for k in KINDS) + f" | {ratio} | {tflops} |")
        g = sums.setdefault(group(r["layer"]), dict.fromkeys(KINDS, 0.0))
        for k in KINDS:
            g[k] += best[k] or float("nan")
    lines += ["", "| layers | fp16 ms | int8 ms | fp8 ms | fp8_fast ms | fp8 / int8 | fp8_fast / int8 |",
              "|---|---|---|---|---|---|---|"]
    for name, g in list(sums.items()) + [("all", {k: sum(g[k] for g in sums.values()) for k in KINDS})]:
        lines.append(f"| {name} | " + " | ".join(f"{g[k]:.2f}" for k in KINDS)
                     + f" | {g['fp8'] / g['int8']:.2f} | {g['fp8_fast'] / g['int8']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=1500)
    p.add_argument("--smoke", action="store_true", help="the small model on the CPU (interpreter): checks the script")
    p.add_argument("--checks-only", action="store_true", help="the checks, no timing")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.smoke else "cuda")
    model = ModelParams() if args.smoke else ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5",
                                                         seed=0)
    frames = 4 if args.smoke else args.frames
    module = FusedDecoder(fold_decoder(load_vae(model).vae)).eval()
    layers = module.layers[:3] + module.layers[-2:] if args.smoke else module.layers
    rows_of = dict(zip([l.spec.name for l in module.layers], layer_frames([l.spec for l in module.layers], frames)))
    gen = torch.Generator(device=device).manual_seed(0)
    result = {"machine": fingerprint(), "device": devices.describe(device), "frames": frames,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "checks": [], "layers": []}

    def save() -> None:
        (out / "results.json").write_text(json.dumps(result, indent=1, default=str))

    units = [l for l in layers if ".res_unit" in l.spec.name]
    for layer in units[-2:]:  # one k=7 and one k=1 layer, short rows
        for kind in ("int8", "fp8", "fp8_fast"):
            result["checks"].append(check(layer, min(rows_of[layer.spec.name], 4096), kind, device, gen))
            print(json.dumps(result["checks"][-1]), flush=True)
    save()
    if args.checks_only:
        return
    with torch.no_grad():
        for layer in layers:
            rows = rows_of[layer.spec.name]
            n, k = layer.weight.shape
            row = {"layer": layer.spec.name, "rows": rows, "c_in": k // layer.spec.taps, "n": n,
                   "taps": layer.spec.taps, "flop": 2.0 * rows * n * k, "tiles": {}, "best": {}}
            for kind in KINDS:
                ops = operands(layer, rows, kind, device, gen)
                times = {}
                for tile in tiles_for(layer, kind):
                    try:
                        times["x".join(map(str, tile))] = round(time_call(lambda: run(ops, tile), device, repeats=10),
                                                                4)
                    except Exception as exc:  # noqa: BLE001  (a tile this GPU cannot run is a row of the record)
                        times["x".join(map(str, tile))] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                ok = {t: ms for t, ms in times.items() if isinstance(ms, float)}
                row["tiles"][kind] = times
                row["best"][kind] = {"tile": min(ok, key=ok.get), "ms": ok[min(ok, key=ok.get)]} if ok else None
                del ops
            result["layers"].append(row)
            print(json.dumps({"layer": row["layer"], "best": row["best"]}), flush=True)
            save()
    result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    (out / "summary.md").write_text(
        f"# fused layer kernel: fp16, int8, fp8 at {frames} frames\n\nDevice: {result['device']}. "
        f"Checks: {result['checks']}\n\n" + summarize(result["layers"]))
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
