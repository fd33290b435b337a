"""The engines that run on the lent GPU, built and timed through the project's own code, in
one process (issue 18): eager PyTorch (what ACE-Step runs today) beside the compiled
PyTorch engines, full-size seeded ACE-Step 1.5 decoder.

    python benchmarks/experiments/gpu_engines.py --out DIR [--frames 125 1500] [--budget-s 540]

Builds each compiled engine with compiled.build.build_package (fp16, fp16 with CUDA graphs,
bf16, fp32; profile 125..1500 frames), loads it back with runtime.load as an app would,
then measures with measure.timing / measure.torch_engines: latency (rounds taking turns, CUDA
events), device memory of one 60 s decode, quality against eager fp32 (TF32 off) on seeded
60 s latents, and the windowed decode (125-frame windows, 16 overlap). Writes
DIR/gpu_engines.json and DIR/gpu_engines.md, and the torch.profiler breakdown of the
compiled fp16 decode to DIR/profile_compiled_fp16.txt. An AOTInductor package of the same
module is tried last in a child process, so a crash there is recorded, not fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vae_engines.compiled.build import build_package  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.params import BenchParams, ModelParams, ProfileParams  # noqa: E402
from vae_engines.measure.timing import streaming  # noqa: E402
from vae_engines.measure.torch_engines import decode_memory_gib, speed  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402
from vae_engines.runtime import load  # noqa: E402
from vae_engines.runtime.base import Shape  # noqa: E402
from vae_engines.runtime.eager import EagerDecoder  # noqa: E402

FULL_SIZE = ModelParams(source="seeded", checkpoint=str(ROOT / "vae_engines/fixtures/acestep-1.5"), seed=0)
PACKAGES = {"compiled fp16": ("fp16", "default"), "compiled fp16 + CUDA graphs": ("fp16", "reduce-overhead"),
            "compiled bf16": ("bf16", "default"), "compiled fp32": ("fp32", "default")}


def categorize(name: str) -> str:
    n = name.lower()
    if "nchwtonhwc" in n or "nhwctonchw" in n:
        return "layout conversion"
    if "dgrad" in n:
        return "conv transpose (dgrad)"
    if "triton" in n:
        return "Inductor fused elementwise (Snake, residual adds, casts)"
    if any(k in n for k in ("fprop", "xmma", "conv", "cudnn", "implicit")):
        return "convolution (cuDNN)"
    return "other"


def profile(decoder, x, path: Path) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    decoder.decode(x)
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            decoder.decode(x)
        torch.cuda.synchronize()
    rows = []
    for e in p.key_averages():
        total = getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0)
        if total:
            rows.append((e.key, total / 3 / 1e3, e.count // 3))
    rows.sort(key=lambda r: -r[1])
    cats: dict[str, float] = {}
    for name, ms, _ in rows:
        cats[categorize(name)] = cats.get(categorize(name), 0.0) + ms
    text = ["self device time per 60 s decode (mean of 3 decodes), torch.profiler", ""]
    text += [f"{ms:9.3f} ms  x{n:<4d} {name[:150]}" for name, ms, n in rows[:40]]
    text += ["", "by category:"] + [f"{ms:9.3f} ms  {c}" for c, ms in sorted(cats.items(), key=lambda kv: -kv[1])]
    path.write_text("\n".join(text) + "\n")
    return {c: round(ms, 3) for c, ms in sorted(cats.items(), key=lambda kv: -kv[1])}


AOTI = r"""
import faulthandler, json, os, sys, time, torch
faulthandler.enable()
sys.path.insert(0, ROOT)
from benchmarks.gpu_engines import FULL_SIZE
from vae_engines.model.channels_last import ChannelsLastDecoder
from vae_engines.model.oobleck import fold_decoder, load_vae
res = {}
model = ChannelsLastDecoder(fold_decoder(load_vae(FULL_SIZE).vae), torch.float16).cuda()
x = torch.randn(1, 64, 1500, device="cuda")
ep = torch.export.export(model, (x,), dynamic_shapes=({2: torch.export.Dim("frames", min=125, max=1500)},))
t = time.perf_counter()
torch._inductor.config.aot_inductor.package_constants_in_so = PACK
path = torch._inductor.aoti_compile_and_package(ep, package_path="/tmp/aoti_fp16.pt2")
res["compile_s"] = round(time.perf_counter() - t, 1)
res["package_mb"] = round(os.path.getsize(path) / 1e6, 1)
print("compiled", res, flush=True)
runner = torch._inductor.aoti_load_package(path)
if not PACK:
    runner.load_constants({k: v for k, v in model.state_dict().items()}, check_full_update=False)
print("loaded", flush=True)
with torch.inference_mode():
    out = runner(x)
torch.cuda.synchronize()
print("ran", tuple(out.shape), flush=True)
"""


def aoti_attempt(out: Path, seconds: float, pack: bool) -> dict:
    code = AOTI.replace("ROOT", repr(str(ROOT))).replace("PACK", str(pack))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))}
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds, env=env)
    except subprocess.TimeoutExpired:
        return {"timeout_s": round(seconds)}
    crash = proc.stderr[proc.stderr.find("Fatal Python error"):][:4000] if "Fatal Python" in proc.stderr else ""
    (out / f"aoti_{'packed' if pack else 'constants_apart'}.txt").write_text(proc.stdout + "\n" + proc.stderr[-20000:])
    return {"returncode": proc.returncode, "stdout": proc.stdout[-1500:], "crash": crash,
            "stderr_tail": proc.stderr[-1200:] if not crash else ""}


def build_all(decoder, shape: Shape, profile_: ProfileParams, out: Path, left) -> dict:
    records = {}
    for name, (precision, mode) in PACKAGES.items():
        if left() < 120:
            records[name] = {"skipped": "time budget"}
            continue
        t = time.perf_counter()
        path = Path("/tmp/gpu_engines") / f"{name.replace(' ', '_').replace('+', 'plus')}.pt2"
        path.parent.mkdir(exist_ok=True)
        rec = build_package(decoder, shape, precision=precision, mode=mode, device=torch.device("cuda"),
                            profile=profile_, path=path, model="seeded acestep-1.5 architecture (seed 0)")
        records[name] = {**rec, "path": str(path), "build_wall_s": round(time.perf_counter() - t, 1)}
        print("built", name, records[name]["compile_seconds"], "s compile", flush=True)
    return records


def quality(decoders: dict, reference, latents) -> dict:
    out = {}
    for name, d in decoders.items():
        decoded = np.concatenate([d.decode(x[None]).cpu().numpy() for x in latents])
        out[name] = round(peak_psnr(reference, decoded), 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, nargs="+", default=[125, 1500])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=540)
    args = p.parse_args()
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def left() -> float:
        return args.budget_s - (time.perf_counter() - start)

    loaded = load_vae(FULL_SIZE)
    decoder = fold_decoder(loaded.vae)
    shape = Shape(channels=64, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    profile_ = ProfileParams(min_frames=125, opt_frames=1500, max_frames=1500)
    doc: dict = {"machine": fingerprint(), "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0),
                 "model": "seeded ACE-Step 1.5 decoder (84.4 M parameters, random weights, seed 0)",
                 "frames": args.frames, "builds": build_all(decoder, shape, profile_, out, left)}
    decoders = {f"eager {p_}": EagerDecoder(decoder, shape, p_, "cuda") for p_ in ("fp32", "fp16")}
    decoders.update({n: load(r["path"]) for n, r in doc["builds"].items() if "path" in r})
    doc["load_seconds"] = {n: d.load_seconds for n, d in decoders.items() if hasattr(d, "load_seconds")}
    bench = BenchParams(frames=tuple(args.frames), warmup=2, repeats=args.repeats, stream_frames=1500,
                        stream_window=125, stream_overlap=16)
    longest = torch.randn(1, 64, max(args.frames), generator=torch.Generator().manual_seed(0)).cuda()
    doc["device_memory_gib"] = {n: decode_memory_gib(d, longest) for n, d in decoders.items()}
    doc["timings"], doc["ratios"] = speed(decoders, bench, 64)
    latents = np.random.default_rng(1).standard_normal((4, 64, 1500)).astype(np.float32)
    reference = np.concatenate([decoders["eager fp32"].decode(x[None]).cpu().numpy() for x in latents])
    doc["psnr_vs_eager_fp32_db"] = quality(decoders, reference, latents)
    doc["streaming"] = {n: streaming(d, 64, 1500, 125, 16) for n, d in decoders.items()}
    doc["profile_compiled_fp16_ms"] = profile(decoders["compiled fp16"], longest, out / "profile_compiled_fp16.txt")
    doc["profile_eager_fp16_ms"] = profile(decoders["eager fp16"], longest, out / "profile_eager_fp16.txt")
    (out / "gpu_engines.json").write_text(json.dumps(doc, indent=2, default=str))
    if left() > 150:
        del decoders
        torch.cuda.empty_cache()
        doc["aoti"] = aoti_attempt(out, left() - 30, pack=True)
    doc["total_s"] = round(time.perf_counter() - start, 1)
    (out / "gpu_engines.json").write_text(json.dumps(doc, indent=2, default=str))
    summary(doc, out)


def summary(doc: dict, out: Path) -> None:
    f = max(doc["frames"])
    lines = [f"# Engines on {doc['gpu']}, {doc['model']}", "",
             f"torch {doc['torch']}; one process; CUDA events; {f} frames = 60 s of audio.", "",
             "| engine | median ms (p10-p90) | device memory GiB | PSNR vs eager fp32 (dB) | 125-frame window: ms/call, "
             "RTF, GiB, stitched vs full dB |", "|---|---|---|---|---|"]
    for t in doc["timings"]:
        if t["frames"] != f:
            continue
        n, s = t["series"], doc["streaming"][t["series"]]
        lines.append(f"| {n} | {t['median_ms']:.1f} ({t['p10_ms']:.1f}-{t['p90_ms']:.1f}) | "
                     f"{doc['device_memory_gib'][n]} | {doc['psnr_vs_eager_fp32_db'][n]} | {s['per_call_median_ms']:.2f}, "
                     f"{s['real_time_factor']:.4f}, {s['peak_device_memory_gib']}, {s['stitched_psnr_vs_full_db']} |")
    lines += [""] + [f"- {r['subject']} vs {r['reference']} at {r['frames']} frames: {r['median_ratio']:.2f}x "
                     f"[{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}] {r['verdict']}" for r in doc["ratios"]]
    lines += ["", f"Profile of compiled fp16 (ms per decode): {doc['profile_compiled_fp16_ms']}",
              f"Profile of eager fp16 (ms per decode): {doc['profile_eager_fp16_ms']}",
              f"AOTInductor: {json.dumps(doc.get('aoti', 'not tried'))[:1500]}"]
    (out / "gpu_engines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
