"""Probe on the lent GPU (issue 18): where a compiled fp16 60 s decode spends its time, and
what channels-last 2-D convolutions, cuDNN autotuning, 1x1-as-matmul and AOTInductor change.

    python benchmarks/gpu_probe.py --out DIR [--frames 1500] [--budget-s 480]

One process times every configuration on one seeded latent (CUDA events, median of
`--reps` after warm-up), with its peak device memory and its peak PSNR against eager fp32
(TF32 off). AOTInductor runs in a child process, so a crash there is recorded, not fatal.
Writes DIR/probe.json, DIR/profile_*.txt and prints a table last.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
faulthandler.enable()

from vae_engines.model.channels_last import ChannelsLastDecoder  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402


class Seeded:
    source, checkpoint, seed = "seeded", str(ROOT / "vae_engines/fixtures/acestep-1.5"), 0


def decoder_fp32():
    return fold_decoder(load_vae(Seeded).vae).eval()


def psnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    rmse = (ref - out).pow(2).mean().sqrt().item()
    return float(20 * np.log10(ref.abs().max().item() / max(rmse, 1e-12)))


def time_it(fn, x, reps: int, warmup: int = 3) -> dict:
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn(x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn(x)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    t = np.array(times)
    return {"median_ms": round(float(np.median(t)), 3), "p10_ms": round(float(np.percentile(t, 10)), 3),
            "p90_ms": round(float(np.percentile(t, 90)), 3), "peak_allocated_gib": round(peak / 2**30, 3),
            "resident_before_gib": round(base / 2**30, 3), "out": out}


def categorize(name: str) -> str:
    n = name.lower()
    if "nchwtonhwc" in n or "nhwctonchw" in n:
        return "layout conversion"
    if "dgrad" in n:
        return "conv transpose (dgrad)"
    if "triton" in n:
        return "inductor fused (Snake, adds)"
    if any(k in n for k in ("fprop", "xmma", "conv", "cudnn", "sm90", "sm80", "implicit")):
        return "convolution"
    if "gemm" in n or "cutlass" in n:
        return "gemm"
    return "other"


def profile(fn, x, path: Path) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with torch.inference_mode():
        fn(x)
        torch.cuda.synchronize()
        with prof(activities=[ProfilerActivity.CUDA]) as p:
            for _ in range(3):
                fn(x)
            torch.cuda.synchronize()
    events = p.key_averages()
    rows = []
    for e in events:
        total = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if total:
            rows.append((e.key, total / 3 / 1e3, e.count // 3))
    rows.sort(key=lambda r: -r[1])
    cats: dict[str, float] = {}
    for name, ms, _ in rows:
        cats[categorize(name)] = cats.get(categorize(name), 0.0) + ms
    lines = [f"{ms:9.3f} ms  x{n:<4d} {name[:150]}" for name, ms, n in rows[:40]]
    path.write_text("per decode (mean of 3), self device time\n" + "\n".join(lines) + "\n\ncategories:\n"
                    + "\n".join(f"{ms:9.3f} ms  {c}" for c, ms in sorted(cats.items(), key=lambda kv: -kv[1])))
    return {c: round(ms, 3) for c, ms in sorted(cats.items(), key=lambda kv: -kv[1])}


AOTI_CHILD = r"""
import faulthandler, json, sys, time, torch
faulthandler.enable()
sys.path.insert(0, ROOT)
from benchmarks.gpu_probe import decoder_fp32, psnr, time_it
from vae_engines.model.channels_last import ChannelsLastDecoder
frames, pkg, ref_path, out_path = FRAMES, PKG, REF, OUT
torch.manual_seed(0)
model = ChannelsLastDecoder(decoder_fp32(), torch.float16).cuda()
x = torch.load(ref_path)["x"].cuda()
res = {}
t = time.perf_counter()
dim = torch.export.Dim("frames", min=16, max=frames)
with torch.inference_mode():
    ep = torch.export.export(model, (x,), dynamic_shapes=({2: dim},))
res["export_s"] = round(time.perf_counter() - t, 1)
print("exported", res, flush=True)
t = time.perf_counter()
path = torch._inductor.aoti_compile_and_package(ep, package_path=pkg)
res["compile_s"] = round(time.perf_counter() - t, 1)
res["package_mb"] = round(__import__("os").path.getsize(path) / 1e6, 1)
print("compiled", res, flush=True)
del model, ep
torch.cuda.empty_cache()
t = time.perf_counter()
runner = torch._inductor.aoti_load_package(path)
res["load_s"] = round(time.perf_counter() - t, 2)
print("loaded", res, flush=True)
r = time_it(runner, x, 10)
out = r.pop("out")
res["timing_1500"] = r
res["psnr_vs_fp32"] = round(psnr(torch.load(ref_path)["ref"].cuda(), out), 2)
r = time_it(runner, x[..., :125].contiguous(), 10)
r.pop("out")
res["timing_125"] = r
json.dump(res, open(out_path, "w"))
print("done", res, flush=True)
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, default=1500)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--skip", default="")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    skip = set(args.skip.split(","))
    results: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
                     "frames": args.frames, "configs": {}, "notes": []}

    def left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    def save() -> None:
        (out / "probe.json").write_text(json.dumps(results, indent=2))

    torch.manual_seed(0)
    x = torch.randn(1, 64, args.frames, device="cuda")
    dec = decoder_fp32()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    with torch.inference_mode():
        ref = dec.cuda()(x).float()
    torch.save({"x": x.cpu(), "ref": ref.cpu()}, "/tmp/probe_ref.pt")
    results["model_s"] = round(time.perf_counter() - start, 1)

    def record(name: str, fn, compile_s: float | None = None) -> None:
        r = time_it(fn, x, args.reps)
        o = r.pop("out")
        r["psnr_vs_fp32"] = round(psnr(ref, o), 2)
        if compile_s is not None:
            r["compile_s"] = round(compile_s, 1)
        results["configs"][name] = r
        print(name, r, flush=True)
        save()

    r = time_it(dec, x, args.reps)
    r.pop("out")
    results["configs"]["eager fp32 1d (tf32 off)"] = r
    eager16 = fold_decoder(load_vae(Seeded).vae).half().cuda().eval()
    record("eager fp16 1d", lambda z: eager16(z.half()).float())
    cl16 = ChannelsLastDecoder(dec.cpu(), torch.float16).cuda()
    dec.cuda()
    record("eager fp16 2d channels-last", cl16)

    def compiled(name, module, mode="default", **inductor):
        import torch._inductor.config as cfg

        torch._dynamo.reset()
        saved = {k: getattr(cfg, k) for k in inductor}
        for k, v in inductor.items():
            setattr(cfg, k, v)
        try:
            fn = torch.compile(module, mode=mode)
            t = time.perf_counter()
            with torch.inference_mode():
                fn(x)
            torch.cuda.synchronize()
            record(name, fn, time.perf_counter() - t)
            return fn
        except Exception as exc:  # a failed configuration is a result too
            results["configs"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            save()
            return None
        finally:
            for k, v in saved.items():
                setattr(cfg, k, v)

    if "1d" not in skip:
        compiled("compile fp16 1d default", lambda z: eager16(z.half()).float())
    best = compiled("compile fp16 2d channels-last default", cl16)
    if best is not None:
        results["profile_2d"] = profile(best, x, out / "profile_2d_default.txt")
        torch.backends.cudnn.benchmark = True
        record("compile fp16 2d channels-last + cudnn.benchmark", best)
        save()
    if "mm" not in skip and left() > 150:
        fn = compiled("compile fp16 2d + conv_1x1_as_mm + cudnn.benchmark", cl16, conv_1x1_as_mm=True)
        if fn is not None:
            results["profile_2d_mm"] = profile(fn, x, out / "profile_2d_mm.txt")
    if "aoti" not in skip and left() > 120:
        child = AOTI_CHILD.replace("ROOT", repr(str(ROOT))).replace("FRAMES", str(args.frames)).replace(
            "PKG", repr("/tmp/probe_fp16.pt2")).replace("REF", repr("/tmp/probe_ref.pt")).replace(
            "OUT", repr(str(out / "aoti.json")))
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                                  timeout=max(60, left() - 60), env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))})
            results["aoti"] = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t, 1),
                               "stdout_tail": proc.stdout[-1500:], "stderr_tail": proc.stderr[-3000:]}
            if (out / "aoti.json").is_file():
                results["aoti"]["result"] = json.loads((out / "aoti.json").read_text())
        except subprocess.TimeoutExpired as exc:
            results["aoti"] = {"timeout": True, "stdout_tail": (exc.stdout or b"")[-1500:].decode(errors="replace")}
        save()
        print("aoti", {k: v for k, v in results["aoti"].items() if k != "stderr_tail"}, flush=True)
        print(results["aoti"].get("stderr_tail", "")[-1500:], flush=True)
    if "bf16" not in skip and left() > 60:
        cl_bf = ChannelsLastDecoder(dec.cpu(), torch.bfloat16).cuda()
        dec.cuda()
        compiled("compile bf16 2d channels-last + cudnn.benchmark", cl_bf)
    results["total_s"] = round(time.perf_counter() - start, 1)
    save()
    print("\n%-55s %9s %9s %9s %8s" % ("config", "median ms", "peak GiB", "PSNR dB", "compile"))
    for name, r in results["configs"].items():
        if "error" in r:
            print(f"{name:55s} ERROR {r['error'][:80]}")
            continue
        print("%-55s %9.2f %9.2f %9s %8s" % (name, r["median_ms"], r["peak_allocated_gib"], r.get("psnr_vs_fp32", "-"),
                                              r.get("compile_s", "-")))


if __name__ == "__main__":
    main()
