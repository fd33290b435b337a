"""The fused-kernel engines on a GPU, against the compiled cuDNN + Inductor engine, in one run.

    python benchmarks/gpu_kernels.py --out DIR [--checks] [--explore] [--smoke]

Full-size seeded ACE-Step 1.5 decoder. Every engine is built with compiled.build (the
pipeline's own build: per-layer tuning, torch.export, torch.compile, package) and loaded
with runtime.load, so what is timed is what an app runs:

  inductor fp16        the compiled engine of issue 18 (cuDNN convolutions + Inductor's fusions)
  fused fp16           one fused Triton convolution per layer (model.fused)
  fused int8           the same with every layer int8 (ranges: the largest |x| of each
                       convolution input over two seeded latents, i.e. minmax on random data)
  fused ... graphs     the two fused engines with CUDA graphs (compile mode reduce-overhead),
                       built from the tiles their tuned builds chose

It writes (to DIR): results.json (everything, each layer's tuning timings included),
summary.md, profile_<engine>.txt (torch.profiler, one 60 s decode each), log.txt. Phases:

1. (--checks) each layer's Triton kernel against the op's torch reference on the GPU;
2. (--explore) more tiles than the build tries, on the layer shapes that dominate;
3. the engines built; quality of a 60 s decode against eager fp32 (TF32 off), 4 latents;
4. 60 s decode: rounds taking turns (ratios with 95% intervals), device memory, a
   125-frame stream with 16 frames of overlap;
5. a sweep of lengths across the profile and three new ones: median of 5 calls after one
   call at that length, the first call's time, and ms per second of audio;
6. profiles.
--smoke runs the script on a CPU (the shipped small model, Triton's interpreter): its
figures mean nothing; it checks the script before device time is spent on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vae_engines.compiled.build import build_package  # noqa: E402
from vae_engines.compiled.int8 import observed_quant  # noqa: E402
from vae_engines.compiled.tune import layer_frames, layer_inputs, tile_of, time_layer  # noqa: E402
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.params import ModelParams, ProfileParams  # noqa: E402
from vae_engines.kernels.op import TOLERANCES  # noqa: E402
from vae_engines.measure.timing import device_memory_gib, interleaved, paired_ratio, streaming, time_ms  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.fused import FusedDecoder, LayerQuant  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402
from vae_engines.runtime import load  # noqa: E402
from vae_engines.runtime.base import Shape  # noqa: E402
from vae_engines.runtime.eager import EagerDecoder  # noqa: E402

log = logging.getLogger("gpu_kernels")
ENGINES = Path("/tmp/gpu_kernels_engines")


class Config:
    """The full-size run on a GPU; `smoke()` shrinks it to check the script on a CPU (the
    shipped small model, Triton's interpreter, a few frames): no figure of a smoke run means
    anything."""

    device = torch.device("cuda")
    model = ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5", seed=0)
    frames = 1500  # the 60 s decode
    min_frames = 125
    sweep = [125, 160, 200, 250, 317, 375, 500, 625, 750, 999, 1000, 1250, 1500]
    eager_at = (125, 250, 750, 1500)
    new_lengths = [777, 1111, 1433]
    window, overlap = 125, 16
    rounds = 10
    check_frames = 32

    @classmethod
    def smoke(cls) -> None:
        cls.device = torch.device("cpu")
        cls.model = ModelParams()
        cls.frames, cls.min_frames, cls.sweep, cls.eager_at, cls.new_lengths = 6, 4, [4, 6], (), [5]
        cls.window, cls.overlap, cls.rounds, cls.check_frames = 4, 1, 2, 2


CFG = Config
EXPLORE = {
    "fp16": [(128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (256, 128, 64, 8, 3),
             (128, 256, 64, 8, 3), (128, 64, 64, 4, 4), (64, 64, 64, 4, 4), (128, 128, 32, 4, 5)],
    "int8": [(128, 128, 128, 4, 4), (128, 128, 128, 8, 3), (64, 128, 128, 4, 4), (256, 128, 128, 8, 3),
             (128, 256, 128, 8, 3), (128, 64, 128, 4, 4), (128, 128, 64, 4, 4), (256, 128, 64, 8, 4)],
}


class Run:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.results: dict = {"machine": fingerprint(), "device": devices.describe(CFG.device),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "phases": {}}

    def phase(self, name: str, fn, *args, keep: bool = True):
        began = time.perf_counter()
        log.info("== %s", name)
        try:
            value = fn(*args)
            self.results["phases"][name] = {"seconds": round(time.perf_counter() - began, 1),
                                            "result": value if keep else "ok"}
        except Exception as exc:  # a phase that fails is reported, and the others still run
            log.error("%s failed: %s", name, exc)
            self.results["phases"][name] = {"seconds": round(time.perf_counter() - began, 1),
                                            "error": traceback.format_exc()[-3000:]}
            value = None
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        return value


def seeded(frames: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((1, 64, frames)).astype(np.float32))


def minmax_quant(decoder, frames: int) -> dict[str, LayerQuant]:
    """Every layer int8: input ranges = largest |x| over two seeded latents (eager fp32)."""
    with devices.exact_fp32():
        return observed_quant(decoder, [seeded(frames, seed).to(CFG.device) for seed in (10, 11)])


def kernel_checks(decoder, quant) -> dict:
    """Each layer's Triton kernel against the torch reference on the GPU, a short latent."""
    out = {}
    for name, q in (("fp16", None), ("int8", quant)):
        module = FusedDecoder(decoder, q).to(CFG.device)
        specs = [layer.spec for layer in module.layers]
        rows = layer_frames(specs, CFG.check_frames)
        worst = {"fp16_rel": 0.0, "int8_share": 0.0, "int8_max_step": 0}
        g = torch.Generator(device=CFG.device).manual_seed(0)
        for i, layer in enumerate(module.layers):
            x, residual = layer_inputs(layer, rows[i], CFG.device, g)
            results = []
            width = layer.weight.shape[0] // 2 if layer.spec.stride else layer.weight.shape[0]
            check = [128, 16 if layer.spec.audio else min(128, width & -width), 64 if name == "fp16" else 128, 4, 4]
            check[2] = min(check[2], layer.weight.shape[1] // layer.spec.taps)
            for tile in ([], check):
                layer.tile = tile
                r = None if residual is None else residual.clone()
                with torch.inference_mode():
                    got = layer(x, r)
                got = [t for t in (got if isinstance(got, tuple) else (got,)) if t.numel()] + ([r] if r is not None else [])
                results.append(got)
            for ref, tri in zip(*results):
                if ref.dtype == torch.int8:
                    d = (ref.int() - tri.int()).abs()
                    worst["int8_share"] = max(worst["int8_share"], float((d > 0).float().mean()))
                    worst["int8_max_step"] = max(worst["int8_max_step"], int(d.max()))
                else:
                    err = ((ref.float() - tri.float()).abs() / (ref.float().abs() + 1e-2)).max()
                    worst["fp16_rel"] = max(worst["fp16_rel"], float(err))
        out[name] = worst
    out["tolerances"] = TOLERANCES
    return out


def explore(decoder, quant) -> dict:
    """More tiles than the build tries, at the long decode's shapes, where the time goes."""
    picks = ["block.0.res_unit1.conv1", "block.4.res_unit1.conv1", "block.4.res_unit1.conv2", "block.3.res_unit2.conv1",
             "block.4.conv_t1", "block.0.conv_t1", "block.2.res_unit1.conv1"]
    out = {}
    g = torch.Generator(device=CFG.device).manual_seed(0)
    for dtype, q in (("fp16", None), ("int8", quant)):
        module = FusedDecoder(decoder, q).to(CFG.device)
        specs = [layer.spec for layer in module.layers]
        rows = layer_frames(specs, CFG.frames)
        for i, layer in enumerate(module.layers):
            if layer.spec.name not in picks:
                continue
            row = {}
            n = layer.weight.shape[0]
            for tile in [[]] + [list(t) for t in EXPLORE[dtype]]:
                if tile and layer.spec.stride and (n // 2) % tile[1]:
                    continue
                layer.tile = tile
                key = "x".join(map(str, tile)) or "torch"
                try:
                    row[key] = time_layer(layer, rows[i], CFG.device, g)
                except Exception as exc:
                    row[key] = f"{type(exc).__name__}: {str(exc)[:80]}"
            out[f"{dtype} {layer.spec.name}"] = row
            log.info("%s %s %s", dtype, layer.spec.name, row)
    return out


def tiles_of(record: dict) -> dict[str, list[int]]:
    return {name: tile_of(v["chosen"]) for name, v in record["layer_ms"].items()}


ENGINE_NAMES = ("inductor fp16", "fused fp16", "fused int8", "fused fp16 graphs", "fused int8 graphs")


def build_engines(decoder, shape, out: Path, quant) -> dict:
    """The engines, each with compiled.build.build_package; the two "graphs" engines take the
    tiles the tuned builds chose and run with CUDA graphs (compile mode reduce-overhead),
    which replay a decode's 37 launches without the per-launch host work."""
    profile = ProfileParams(min_frames=CFG.min_frames, opt_frames=CFG.frames, max_frames=CFG.frames)
    engines = {}
    for name, kernels, q, mode, tiles_from in (
            ("fused fp16", "fused", None, "default", None), ("fused int8", "fused", quant, "default", None),
            ("inductor fp16", "inductor", None, "default", None),
            ("fused fp16 graphs", "fused", None, "reduce-overhead", "fused fp16"),
            ("fused int8 graphs", "fused", quant, "reduce-overhead", "fused int8")):
        if CFG.device.type != "cuda" and mode == "reduce-overhead":
            continue
        path = out / f"{name.replace(' ', '_')}.pt2"
        began = time.perf_counter()
        rec = build_package(decoder, shape, precision="fp16", mode=mode, device=CFG.device,
                            profile=profile, path=path, model="seeded acestep-1.5 (seed 0)", kernels=kernels, quant=q,
                            variant="minmax on 2 seeded latents, all layers" if q else None,
                            tiles=tiles_of(engines[tiles_from]) if tiles_from else None)
        rec["build_wall_seconds"] = round(time.perf_counter() - began, 1)
        engines[name] = {k: v for k, v in rec.items() if k != "layers"}
        engines[name]["layer_choice"] = {k: v["chosen"] for k, v in rec.get("layers", {}).items()}
        engines[name]["layer_ms"] = {k: v for k, v in rec.get("layers", {}).items()}
        log.info("built %s in %.1f s", name, rec["build_wall_seconds"])
    return engines


def load_all(out: Path, decoder, shape) -> dict:
    decoders = {name: load(out / f"{name.replace(' ', '_')}.pt2") for name in ENGINE_NAMES
                if (out / f"{name.replace(' ', '_')}.pt2").is_file()}
    decoders["eager fp16"] = EagerDecoder(decoder, shape, "fp16", CFG.device)
    return decoders


def quality(decoders, decoder, shape) -> dict:
    ref = EagerDecoder(decoder, shape, "fp32", CFG.device)
    out = {}
    lat = [seeded(CFG.frames, 100 + i) for i in range(4)]
    refs = [ref.decode(x).cpu().numpy() for x in lat]
    for name, d in decoders.items():
        out[name] = round(float(np.mean([peak_psnr(r, d.decode(x).cpu().numpy()) for r, x in zip(refs, lat)])), 2)
    return out


def sweep(decoders) -> dict:
    out = {}
    for frames in CFG.sweep + CFG.new_lengths:
        x = seeded(frames, 7).to(CFG.device)
        row = {}
        for name, d in decoders.items():
            if name == "eager fp16" and frames not in CFG.eager_at:
                continue
            devices.synchronize(CFG.device)
            t0 = time.perf_counter()
            d.decode(x)
            devices.synchronize(CFG.device)
            first = (time.perf_counter() - t0) * 1e3
            times = [time_ms(d, d.prepare(x)) for _ in range(5)]
            med = float(np.median(times))
            row[name] = {"median_ms": round(med, 3), "min_ms": round(min(times), 3), "max_ms": round(max(times), 3),
                         "first_call_ms": round(first, 2), "ms_per_audio_s": round(med / (frames / 25), 3)}
        out[frames] = row
        log.info("%d frames: %s", frames, {k: v["median_ms"] for k, v in row.items()})
    return out


def sixty(decoders) -> dict:
    names = list(decoders)
    t = interleaved(decoders, 1, CFG.frames, 64, 2, CFG.rounds)
    summaries = {k: v.summary() for k, v in t.items()}
    ratios = [paired_ratio(t[a], t[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    memory = {}
    for name, d in decoders.items():
        x = d.prepare(seeded(CFG.frames, 3))
        memory[name] = device_memory_gib(d, lambda: d.decode(x))
    stream = {name: streaming(d, 64, CFG.frames, CFG.window, CFG.overlap) for name, d in decoders.items()
              if name != "eager fp16"}
    return {"timings": summaries, "ratios": ratios, "device_memory_gib": memory, "streaming": stream}


def profiles(decoders, out: Path) -> dict:
    from torch.profiler import ProfilerActivity, profile

    res = {}
    for name in ("fused fp16", "fused int8", "inductor fp16"):
        d = decoders[name]
        x = d.prepare(seeded(CFG.frames, 5))
        d.decode(x)
        devices.synchronize(CFG.device)
        with profile(activities=[ProfilerActivity.CUDA if CFG.device.type == "cuda" else ProfilerActivity.CPU]) as prof:
            d.decode(x)
            devices.synchronize(CFG.device)
        table = prof.key_averages().table(sort_by="cuda_time_total" if CFG.device.type == "cuda" else "cpu_time_total", row_limit=25, max_name_column_width=90)
        (out / f"profile_{name.replace(' ', '_')}.txt").write_text(table)
        total = sum(e.device_time_total for e in prof.key_averages()) / 1e3
        res[name] = {"kernel_ms_total": round(total, 2)}
    return res


def summary_md(results: dict) -> str:
    ph = results["phases"]
    lines = [f"# Fused kernels on {results['device'].get('name')} ({results['started']})", ""]
    sw = ph.get("sweep", {}).get("result") or {}
    if sw:
        names = sorted({n for row in sw.values() for n in row})
        lines += ["| frames | " + " | ".join(f"{n} ms (ms/s audio)" for n in names) + " |",
                  "|---|" + "---|" * len(names)]
        for frames, row in sw.items():
            cells = [f"{row[n]['median_ms']} ({row[n]['ms_per_audio_s']})" if n in row else "-" for n in names]
            lines.append(f"| {frames} | " + " | ".join(cells) + " |")
    for key in ("quality", "sixty", "kernel checks", "profiles"):
        if key in ph:
            lines += ["", f"## {key}", "```", json.dumps(ph[key].get("result", ph[key].get("error")), indent=1,
                                                         default=str)[:6000], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--explore", action="store_true", help="time more tiles on the costliest layer shapes")
    parser.add_argument("--checks", action="store_true", help="each layer's kernel against the torch reference")
    parser.add_argument("--smoke", action="store_true", help="check the script on a CPU (figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        CFG.smoke()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ENGINES.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(out / "log.txt")])
    run = Run(out)
    loaded = load_vae(CFG.model)
    decoder = fold_decoder(loaded.vae).to(CFG.device)
    shape = Shape(channels=64, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    quant = run.phase("int8 ranges", minmax_quant, decoder, CFG.frames, keep=False)
    if args.checks:
        run.phase("kernel checks", kernel_checks, decoder, quant)
    if args.explore:
        run.phase("explore", explore, decoder, quant)
    run.phase("build", build_engines, decoder, shape, ENGINES, quant)
    decoders = run.phase("load", load_all, ENGINES, decoder, shape, keep=False)
    run.results["phases"]["load"]["result"] = {k: v.describe() for k, v in (decoders or {}).items()}
    if decoders:
        run.phase("quality", quality, decoders, decoder, shape)
        run.phase("sixty", sixty, decoders)
        run.phase("sweep", sweep, decoders)
        run.phase("profiles", profiles, decoders, out)
    (out / "summary.md").write_text(summary_md(run.results))
    print((out / "summary.md").read_text()[:6000])


if __name__ == "__main__":
    main()
