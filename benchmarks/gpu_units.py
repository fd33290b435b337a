"""The residual unit as one kernel (issue 36) on a GPU, layer by layer and end to end, one process.

    python benchmarks/gpu_units.py --out DIR [--ranges R.ranges.json ...] [--rounds N] [--smoke]

Full-size seeded ACE-Step 1.5 decoder (fixtures/acestep-1.5, seed 0: the 60 s GPU
configuration's model). Engines are model.fused.FusedDecoder modules with the tune stage's
own choices (compiled.tune.tune_tiles), each captured as a CUDA graph per length (what the
compiled engines' graph mode runs; no host work in the timed region):

  fp16 layers / fp16 units     every layer fp16; units: the residual units the tuner fused
  int8 <variant> layers/units  a calibrated INT8 variant of the 60 s configuration (its
                               ranges.json: every int8 layer's calibrated input range), or,
                               without --ranges, minmax over two seeded latents
  ... units, conv2 layer kernel  where the tuner chose kernels.triton_outconv for the output
                               convolution: the same engine with its fastest layer-kernel tile

Phases, each writing DIR/results.json as it ends (a call cut short keeps what finished):
0. (--explore) tiles beyond the tuner's candidates on the units and layers that dominate;
1. ceilings: copy bandwidth (bytes read + written), dense fp16 and int8 GEMMs at 8192^3;
2. tune: each layer's tile and each unit's kernel against its two layers, at the lengths of
   the 60 s configuration's tune stage (250 and 1500 frames), kernels compiled ahead;
3. checks: each unit kernel in every tile against the CPU reference of its two layers, and clocks:
   a few fp16 layers timed from an idle GPU, as kernels alone behind a spin (the tune stage's
   clock since 2026-12-08) and inside a CUDA graph, to show the second matches the third;
4. table: the layer table with the roofline column (benchmarks/layer_table.py), layers and units;
5. decode: 60 s decodes, rounds taking turns, ratios with 95% intervals, device memory;
6. sweep: milliseconds per second of audio from 250 to 1500 frames, each engine;
7. quality: peak PSNR against eager fp32 (TF32 off) on seeded latents at unit scale and at the
   seeded encoder's scale (std 0.027, the 60 s configuration's held-out windows), and units
   against layers (the same arithmetic but for the unit's two Snakes, which skip the fp16
   roundings: kernels.op.UNIT_VS_LAYERS);
8. (--package) the fp16 and the first INT8 engine as the pipeline ships them (build_package,
   reduce-overhead), loaded with runtime.load: each against its module, and their 60 s decode.
--smoke runs it on the CPU (the shipped small model, Triton's interpreter, a few frames): its
figures mean nothing; it checks the script before device time is spent on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from layer_table import roofline_rows, table_md  # noqa: E402

from vae_engines.compiled.int8 import layer_quant, observed_quant  # noqa: E402
from vae_engines.compiled.tune import tile_of, tiles_for, tune_tiles  # noqa: E402
from vae_engines.core import clock  # noqa: E402
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.core.env import fingerprint  # noqa: E402
from vae_engines.core.params import ModelParams  # noqa: E402
from vae_engines.kernels.op import is_outconv  # noqa: E402
from vae_engines.measure.timing import Timing, paired_ratio, turns  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.fused import FusedDecoder, unit_of  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_units")


class Config:
    device = torch.device("cuda")
    model = ModelParams(source="seeded", checkpoint="vae_engines/fixtures/acestep-1.5", seed=0)
    frames = 1500
    tune_frames = [250, 1500]
    sweep = [250, 251, 300, 375, 500, 501, 625, 750, 1000, 1250, 1500]
    check_frames = 16
    rounds = 12
    sweep_rounds = 5
    hop_s = 1920 / 48000

    @classmethod
    def smoke(cls) -> None:
        cls.device = torch.device("cpu")
        cls.model = ModelParams()
        cls.frames, cls.tune_frames, cls.sweep, cls.check_frames, cls.rounds = 3, [2], [2, 3], 1, 2
        from vae_engines.compiled import tune as tuner  # one candidate a kind: the interpreter is slow

        for table in (tuner.CANDIDATES, tuner.UNIT_CANDIDATES):
            for kind in table:
                table[kind] = table[kind][:1]
        for kind in tuner.SHORT_K_CANDIDATES:
            tuner.SHORT_K_CANDIDATES[kind] = tuner.SHORT_K_CANDIDATES[kind][:1]
        timed = tuner.time_call
        tuner.time_call = lambda fn, device: timed(fn, device, repeats=1, warmup=0)
        cls.sweep_rounds = 1


CFG = Config


def seeded(frames: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    x = np.random.default_rng(seed).standard_normal((1, 64, frames)).astype(np.float32) * scale
    return torch.from_numpy(x).to(CFG.device)


def sync() -> None:
    if CFG.device.type == "cuda":
        torch.cuda.synchronize()


def kernel_ms(fn, repeats: int = 5, warm: bool = True) -> float:
    """Median ms of the kernels fn() queues, without the host's work to queue them
    (core.clock; the wall clock on a CPU), after one untimed call where `warm`."""
    return clock.kernel_ms(fn, CFG.device, repeats, warmup=1 if warm else 0)


def call_ms(fn, repeats: int = 5, warm: bool = True) -> float:
    """Median ms of fn() as its caller sees it, the host's work to queue it included (core.clock.call_ms:
    a decode's figure), after one untimed call where `warm`."""
    if warm:
        fn()
    return sorted(clock.call_ms(fn, CFG.device) for _ in range(repeats))[repeats // 2]


def ceilings() -> dict:
    """The roofline's two ceilings on this GPU: copy bandwidth, and the dense GEMM rates of
    cuBLAS (torch.matmul fp16, torch._int_mm int8), each the fastest of three shapes: 8192^3
    and two of this decoder's implicit GEMMs (block 0's k=7 convolution, 15000 x 1024 x 7168,
    and block 4's, 2880000 x 128 x 896). One square shape alone put int8 at 683 TOPS on the
    H100, below what the project's own int8 layers reach, so their "x floor" read under 1."""
    cuda = CFG.device.type == "cuda"
    a = torch.empty(1 << (30 if cuda else 20), dtype=torch.uint8, device=CFG.device)
    b = torch.empty_like(a)
    copy_ms, copied = kernel_ms(lambda: b.copy_(a)), a.numel()
    a = b = None
    shapes = [(8192, 8192, 8192), (15000, 1024, 7168), (2880000, 128, 896)] if cuda else [(256, 256, 256)]
    rates: dict[str, list[float]] = {"fp16": [], "int8": []}
    for m, n, k in shapes:
        x = torch.randn(m, k, device=CFG.device, dtype=torch.float16)
        w = torch.randn(n, k, device=CFG.device, dtype=torch.float16)
        rates["fp16"].append(2.0 * m * n * k / kernel_ms(lambda: x @ w.T) / 1e9)
        if cuda:
            xi = torch.randint(-127, 128, (m, k), device=CFG.device, dtype=torch.int8)
            wi = torch.randint(-127, 128, (n, k), device=CFG.device, dtype=torch.int8)
            rates["int8"].append(2.0 * m * n * k / kernel_ms(lambda: torch._int_mm(xi, wi.T)) / 1e9)
            xi = wi = None
        x = w = None
    rates["int8"] = rates["int8"] or rates["fp16"]
    return {"copy_tb_s": round(2 * copied / copy_ms / 1e9, 3),
            "fp16_tflops": round(max(rates["fp16"]), 1), "int8_tops": round(max(rates["int8"]), 1),
            "by_shape": {"x".join(map(str, s)): {"fp16": round(f, 1), "int8": round(i, 1)}
                         for s, f, i in zip(shapes, rates["fp16"], rates["int8"])},
            "how": f"copy of {copied >> 20} MiB (read + write); torch.matmul fp16 and torch._int_mm int8, the fastest of "
                   f"{', '.join('x'.join(map(str, s)) for s in shapes)}; median of 5 after one call, the kernels alone "
                   "(core.clock)"}


def quant_of(decoder, ranges: Path | None) -> dict:
    if ranges is None:
        with devices.exact_fp32():
            return observed_quant(decoder.to(CFG.device), [seeded(CFG.frames, s) for s in (10, 11)])
    return layer_quant(decoder, json.loads(ranges.read_text()))


def checks(decoder, quants: dict) -> dict:
    """Each unit kernel against the CPU reference of its two layers (kernels.op.TOLERANCES)."""
    from vae_engines.compiled.tune import layer_frames, layer_inputs, unit_candidates

    out = {}
    for name, quant in {"fp16": None, **quants}.items():
        module = FusedDecoder(decoder, quant)
        rows = layer_frames([layer.spec for layer in module.layers], CFG.check_frames)
        g = torch.Generator().manual_seed(0)
        worst = {"max_abs_stream": 0.0, "s_max_step_or_abs": 0.0, "units": 0}
        for i, layer in enumerate(module.layers):
            tiles = unit_candidates(module, i)
            if not tiles:
                continue
            x, _ = layer_inputs(layer, rows[i], torch.device("cpu"), g)
            stream = torch.randn(1, rows[i], layer.weight.shape[0], generator=g).half()
            ref_stream = stream.clone()
            module.unit_tiles[i] = []
            ref_s = module._unit(i, x, ref_stream)
            gpu = module.to(CFG.device)
            for tile in tiles:
                gpu.unit_tiles[i] = tile
                got_stream = stream.to(CFG.device)
                got_s = gpu._unit(i, x.to(CFG.device), got_stream).cpu()
                worst["max_abs_stream"] = max(worst["max_abs_stream"],
                                              float((got_stream.cpu().float() - ref_stream.float()).abs().max()))
                diff = (got_s.float() - ref_s.float()).abs()
                worst["s_max_step_or_abs"] = max(worst["s_max_step_or_abs"], float(diff.max()))
                worst["s_share_differing"] = max(worst.get("s_share_differing", 0.0), float((diff > 0).float().mean()))
            module = gpu.to("cpu")
            module.unit_tiles[i] = []
            worst["units"] += 1
        out[name] = worst
    return out


EXPLORE = {  # tiles beyond the tuner's candidates, timed on the shapes that dominate (--explore)
    "unit fp16": [(256, 64, 64, 8, 3), (256, 64, 64, 16, 3), (256, 64, 128, 16, 3), (256, 64, 64, 8, 4),
                  (128, 64, 128, 8, 4), (128, 64, 64, 8, 3)],
    "unit int8": [(256, 128, 128, 8, 3), (256, 128, 64, 16, 3), (256, 64, 64, 8, 4), (256, 128, 128, 8, 2),
                  (128, 128, 128, 4, 3), (128, 128, 128, 8, 3)],
    "layer fp16": [(256, 16, 64, 8, 3), (512, 16, 64, 8, 3), (256, 16, 128, 8, 2), (128, 16, 128, 4, 3),
                   (256, 128, 64, 8, 3), (128, 128, 64, 8, 4), (256, 64, 64, 8, 3)],
    "layer int8": [(512, 16, 128, 8, 3), (256, 16, 128, 4, 3), (256, 128, 128, 8, 4), (128, 128, 128, 8, 4),
                   (256, 64, 128, 8, 3), (128, 128, 128, 8, 3, 1), (128, 64, 128, 4, 4, 2), (64, 128, 128, 4, 4, 2),
                   (256, 128, 128, 8, 3, 1), (128, 128, 128, 8, 3, 1, 1)],
}
EXPLORE_AT = {"unit": ["block.2.res_unit1", "block.3.res_unit1", "block.4.res_unit1"],
              "layer": ["conv2", "block.4.conv_t1", "block.4.res_unit1.conv2", "block.1.res_unit1.conv2",
                        "block.0.res_unit1.conv2", "block.1.conv_t1"]}


def explore(decoder, quants: dict) -> dict:
    """EXPLORE's tiles at the longest tuned length on EXPLORE_AT's units and layers (median of 11)."""
    from vae_engines.compiled.tune import all_int8, layer_frames, layer_inputs

    out: dict = {}
    for kind, quant in (("fp16", None), ("int8", all_int8(decoder))):
        module = FusedDecoder(decoder, quant).to(CFG.device)
        rows = layer_frames([layer.spec for layer in module.layers], max(CFG.tune_frames))
        g = torch.Generator(device=CFG.device).manual_seed(2)
        with torch.inference_mode():
            for i, layer in enumerate(module.layers):
                unit, name = unit_of(layer.spec), layer.spec.name
                if unit not in EXPLORE_AT["unit"] and name not in EXPLORE_AT["layer"]:
                    continue
                x, residual = layer_inputs(layer, rows[i], CFG.device, g)
                stream = torch.randn(1, rows[i], layer.weight.shape[0], generator=g, device=CFG.device,
                                     dtype=torch.float16)
                for what, key in (("unit", unit), ("layer", name)):
                    if key not in EXPLORE_AT[what]:
                        continue
                    for tile in EXPLORE[f"{what} {kind}"]:
                        tile = list(tile)
                        if what == "layer" and (tile[1] == 16) != layer.spec.audio:
                            continue  # BN = 16 tiles are for the 2-channel output convolution alone
                        label = "x".join(map(str, tile))
                        try:
                            if what == "unit":
                                module.unit_tiles[i] = tile
                                ms = kernel_ms(lambda: module._unit(i, x, stream), repeats=11)
                            else:
                                layer.tile = tile
                                ms = kernel_ms(lambda: layer(x, residual), repeats=11)
                            out.setdefault(f"{kind} {key}", {})[label] = round(ms, 4)
                        except Exception as exc:  # a tile this GPU cannot run: recorded, not fatal
                            out.setdefault(f"{kind} {key}", {})[label] = f"{type(exc).__name__}: {str(exc)[:120]}"
                    module.unit_tiles[i] = []
                x = residual = stream = None
        module = None
        torch.cuda.empty_cache() if CFG.device.type == "cuda" else None
    return out


def tune(decoder) -> dict:
    """What the tune stage records (compiled.build.tune_kernels), here."""
    record = tune_tiles(decoder, CFG.device, CFG.tune_frames, jobs=8 if CFG.device.type == "cuda" else 1)
    return {"device": devices.describe(CFG.device), "frames": CFG.tune_frames, **record}


CLOCKED = ["conv1", "block.0.res_unit1.conv1", "block.0.res_unit1.conv2", "block.4.conv_t1", "block.4.res_unit1"]
GRAPHED = 20  # launches captured in one CUDA graph


def clocks(decoder, tuned: dict) -> dict:
    """The fp16 engine's CLOCKED layers and unit at CFG.frames, each timed three ways (median of 11): one
    call from an idle GPU (core.clock.call_ms, as every layer time was until run 20: the host's launch
    work included), its kernels behind a spin (clock.kernel_ms, as the tune stage times now), and GRAPHED
    launches captured in one CUDA graph, per launch (no host work between kernels, as in a decode).
    kernel_ms should match the graph's figure, and call_ms exceed it by the host's work."""
    from vae_engines.compiled.tune import layer_frames, layer_inputs

    module = FusedDecoder(decoder, None, tiles_for(tuned, set())).to(CFG.device).eval()
    rows = layer_frames([layer.spec for layer in module.layers], CFG.frames)
    g = torch.Generator(device=CFG.device).manual_seed(3)
    out = {}
    with torch.inference_mode():
        for i, layer in enumerate(module.layers):
            unit, name = unit_of(layer.spec), layer.spec.name
            fused = bool(module.unit_tiles[i])
            if (unit if fused else name) not in CLOCKED:
                continue
            x, residual = layer_inputs(layer, rows[i], CFG.device, g)
            if fused:
                stream = torch.randn(1, rows[i], layer.weight.shape[0], generator=g, device=CFG.device,
                                     dtype=torch.float16)
                call = (lambda i=i, x=x, stream=stream: module._unit(i, x, stream))
            else:
                call = (lambda layer=layer, x=x, r=residual: layer(x, r))
            entry = {"call_ms": call_ms(call, repeats=11), "kernel_ms": kernel_ms(call, repeats=11)}

            def many(call=call) -> None:  # each output dropped at once: the graph reuses its memory
                for _ in range(GRAPHED):
                    call()

            replay, _ = captured(many)
            entry["graph_ms"] = call_ms(replay, repeats=11) / GRAPHED
            entry = {k: round(v, 4) for k, v in entry.items()}
            entry["kernel_over_graph"] = round(entry["kernel_ms"] / entry["graph_ms"], 3)
            entry["host_ms"] = round(entry["call_ms"] - entry["kernel_ms"], 4)
            out[unit if fused else name] = entry
            log.info("clocks %s: %s", unit if fused else name, entry)
            x = residual = stream = call = replay = None
    module = None
    torch.cuda.empty_cache() if CFG.device.type == "cuda" else None
    return {"frames": CFG.frames, "graphed": GRAPHED, "layers": out}


def engines(decoder, quants: dict, tuned: dict) -> dict:
    """name -> FusedDecoder on the device: each precision with its units fused and without."""
    out = {}
    for name, quant in {"fp16": None, **quants}.items():
        tiles = tiles_for(tuned, set(quant or {}))
        layers_only = {k: v for k, v in tiles.items() if not tuned["fp16"][k].get("unit")}
        out[f"{name} layers"] = FusedDecoder(decoder, quant, layers_only).to(CFG.device).eval()
        out[f"{name} units"] = FusedDecoder(decoder, quant, tiles).to(CFG.device).eval()
        log.info("%s: units fused %s", name, out[f"{name} units"].fused_units)
        old_conv2 = layer_kernel_tile(tuned["int8" if quant else "fp16"].get("conv2", {}))
        if is_outconv(tiles.get("conv2", [])) and old_conv2:  # the same engine, its output conv as before
            out[f"{name} units, conv2 layer kernel"] = FusedDecoder(
                decoder, quant, {**tiles, "conv2": old_conv2}).to(CFG.device).eval()
    return out


def layer_kernel_tile(record: dict) -> list[int] | None:
    """The fastest layer-kernel tile (not torch, not kernels.triton_outconv's) a layer's tune record timed."""
    timed = {label: sum(ms) for label, ms in record.get("ms", {}).items() if isinstance(ms, list) and ms}
    layer = {label: total for label, total in timed.items() if tile_of(label) and not is_outconv(tile_of(label))}
    return tile_of(min(layer, key=layer.get)) if layer else None


def graph(module, latent):
    """A replay() that decodes `latent`'s static copy (a CUDA graph; a plain call on a CPU), and its
    output. The replay holds the module and the static input: a graph reads their memory, and a
    freed module's weights make a replay fault (benchmarks/experiments/package_graphs.py met it)."""
    static = latent.clone()
    with torch.inference_mode():
        replay, out = captured(lambda: module(static))
    held = (replay, module, static)
    return (lambda: held[0]()), out


def captured(fn):
    """fn() captured in a CUDA graph after one call on a side stream: (its replay, the captured call's
    output); on a CPU (fn, None)."""
    if CFG.device.type != "cuda":
        return fn, None
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g.replay, out


def rounds(decoders: dict, frames: int, n: int) -> dict[str, Timing]:
    """Each engine's decode of one seeded latent, n rounds taking turns (graphs captured first)."""
    latent = seeded(frames, 0)
    replays = {name: graph(m, latent)[0] for name, m in decoders.items()}
    names = list(replays)
    for name in names:
        replays[name]()
    timings = {name: Timing(name, 1, frames) for name in names}
    for r in range(n):
        for name in turns(names, r):
            timings[name].ms.append(call_ms(replays[name], repeats=1))
    del replays
    sync()
    return timings


def decode(decoders: dict) -> dict:
    """60 s decodes: every engine's rounds, ratios against fp16 layers and units against layers, memory."""
    timings = rounds(decoders, CFG.frames, CFG.rounds)
    out = {"frames": CFG.frames, "timings": {k: t.summary() for k, t in timings.items()}, "ratios": []}
    base = timings["fp16 layers"]
    for name, t in timings.items():
        if name != "fp16 layers":
            out["ratios"].append(paired_ratio(t, base))
        if name.endswith("units") and name != "fp16 units":
            out["ratios"].append(paired_ratio(t, timings[name.replace("units", "layers")]))
        if name.endswith("conv2 layer kernel"):  # the output-conv kernel's gain, same engine otherwise
            out["ratios"].append(paired_ratio(timings[name.replace(", conv2 layer kernel", "")], t))
    fp16_units = timings["fp16 units"]
    out["ratios"] += [paired_ratio(t, fp16_units) for n, t in timings.items() if n.startswith("int8") and
                      n.endswith("units")]
    out["memory_gib"] = {}
    if CFG.device.type == "cuda":
        for name, m in decoders.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            with torch.inference_mode():
                m(seeded(CFG.frames, 0))
            sync()
            out["memory_gib"][name] = round((torch.cuda.max_memory_allocated() - before) / 2 ** 30, 2)
    return out


def sweep(decoders: dict) -> dict:
    """ms per second of audio at each length (median of rounds taking turns), and each engine's
    worst length from 250 frames as a multiple of its best."""
    per_s: dict[str, dict[int, float]] = {name: {} for name in decoders}
    for frames in CFG.sweep:
        for name, t in rounds(decoders, frames, CFG.sweep_rounds).items():
            per_s[name][frames] = round(float(np.median(t.ms)) / (frames * 1920 / 48000), 4)
    worst = {}
    for name, by_len in per_s.items():
        best = min(by_len.values())
        frames, value = max(((f, v) for f, v in by_len.items() if f >= min(CFG.sweep)), key=lambda fv: fv[1])
        worst[name] = {"frames": frames, "x_best": round(value / best, 3)}
    return {"ms_per_audio_second": per_s, "worst_vs_best": worst}


def quality(decoder, decoders: dict) -> dict:
    """Peak PSNR against eager fp32 (TF32 off): unit-scale and encoder-scale latents; units vs layers."""
    out = {}
    reference = decoder.to(CFG.device).eval()
    for kind, scale in (("unit_normal", 1.0), ("encoder_scale_0.027", 0.027)):
        latents = [seeded(CFG.frames, s, scale) for s in (20, 21)]
        with torch.inference_mode(), devices.exact_fp32():
            expected = [reference(x).float().cpu().numpy() for x in latents]
        got = {}
        with torch.inference_mode():
            for name, m in decoders.items():
                got[name] = [m(x).float().cpu().numpy() for x in latents]
        out[kind] = {name: round(float(np.mean([peak_psnr(e, g) for e, g in zip(expected, a)])), 2)
                     for name, a in got.items()}
        out[kind]["units_vs_layers"] = {
            name: round(float(np.mean([peak_psnr(a, b) for a, b in zip(got[name.replace("units", "layers")],
                                                                         got[name])])), 2)
            for name in got if name.endswith("units")}
    reference.to("cpu")
    return out


def ship(decoder, named: dict, tuned: dict, out: Path) -> tuple[dict, dict]:
    """Each name -> quant (None: fp16) of `named` as the pipeline ships it: compiled.build.build_package
    with the tuned tiles (units included) in compile mode reduce-overhead (CUDA graphs), loaded with
    runtime.load, its decode against its module's. Returns (name -> what its record says, name ->
    the loaded engine); the packages stay in `out` until the caller removes them."""
    from vae_engines.compiled.build import build_package
    from vae_engines.core.params import ProfileParams
    from vae_engines.runtime import load
    from vae_engines.runtime.base import Shape

    shape = Shape(channels=64, hop=1920, sampling_rate=48000)
    profile = ProfileParams(min_frames=125 if CFG.device.type == "cuda" else 2, opt_frames=CFG.frames,
                            max_frames=CFG.frames)
    mode = "reduce-overhead" if CFG.device.type == "cuda" else "default"
    result, engines = {}, {}
    for name, quant in named.items():
        tiles = tiles_for(tuned, set(quant or {}))
        path = out / f"{name.replace(' ', '_')}.pt2"
        began = time.perf_counter()
        record = build_package(decoder, shape, precision="fp16", mode=mode, device=CFG.device, profile=profile,
                               path=path, model="seeded acestep-1.5 (seed 0)", kernels="fused", quant=quant,
                               variant=name if quant else None, tiles=tiles)
        engine = load(path, on_range="off") if quant else load(path)
        module = FusedDecoder(decoder, quant, tiles).to(CFG.device).eval()
        x = seeded(CFG.frames, 30, 0.027)
        with torch.inference_mode():
            agree = peak_psnr(module(x).float().cpu().numpy(), engine.decode(x, check_finite=False).float().cpu().numpy())
        engines[name] = engine
        result[name] = {"build_s": round(time.perf_counter() - began, 1), "precision": record["precision"],
                        "fused_units": record.get("fused_units"), "executed": record.get("executed"),
                        "package_vs_module_db": round(float(agree), 2)}
        module = None
    return result, engines


def package(decoder, quants: dict, tuned: dict, out: Path) -> dict:
    """The engines as the pipeline ships them: compiled.build.build_package with the tuned tiles
    (units included) in compile mode reduce-overhead (CUDA graphs), loaded with runtime.load;
    each decode against its module's, and the 60 s decode in rounds taking turns."""
    result, shipped = ship(decoder, {"fp16": None, **dict(list(quants.items())[:1])}, tuned, out)
    engines = {f"{name} package": engine for name, engine in shipped.items()}
    timings = package_rounds(engines)
    result["timings"] = {n: t.summary() for n, t in timings.items()}
    names = list(timings)
    result["ratio"] = paired_ratio(timings[names[-1]], timings[names[0]]) if len(names) > 1 else None
    result["sweep"] = package_sweep(engines)
    result["check_order"] = check_order(engines)
    for p in out.glob("*.pt2*"):
        p.unlink()
    return result


def compare_packages(engines: dict, pairs, out: Path) -> dict:
    """Loaded packages' 60 s decodes in rounds taking turns (package_rounds), the paired ratio of each
    (subject, reference) pair of their names, and each one's sweep of lengths; then removes the
    packages from `out`."""
    timings = package_rounds(engines)
    result = {"timings": {n: t.summary() for n, t in timings.items()},
              "ratios": [paired_ratio(timings[a], timings[b]) for a, b in pairs], "sweep": package_sweep(engines)}
    for p in out.glob("*.pt2*"):
        p.unlink()
    return result


def package_rounds(engines: dict) -> dict[str, Timing]:
    """Loaded packages' 60 s decodes (unchecked), three warm-up calls each, then CFG.rounds rounds
    taking turns."""
    x = seeded(CFG.frames, 0)
    for e in engines.values():
        for _ in range(3):
            e.decode(x, check_finite=False)
    timings = {n: Timing(n, 1, CFG.frames) for n in engines}
    for r in range(CFG.rounds):
        for n in turns(list(engines), r):
            timings[n].ms.append(call_ms(lambda n=n: engines[n].decode(x, check_finite=False), repeats=1))
    return timings


def check_order(engines: dict) -> dict:
    """What the latent check costs a package's decode, at a streaming window (125 frames) and
    at 60 s: unchecked (check_finite=False, as the timings above), checked as decode does it
    (the decode queued before the host waits on the check's event), and checked first (the
    readback before the launch), in rounds taking turns; and whether a NaN / inf is refused."""
    ways = {"unchecked": lambda e, x: e.decode(x, check_finite=False),
            "checked": lambda e, x: e.decode(x),
            "checked first": lambda e, x: (e.check(x), e.decode(x, check_finite=False, on_range="off"))}
    out: dict = {}
    for frames in sorted({min(125, CFG.frames), CFG.frames}):
        x = seeded(frames, 2)
        series = {(n, w): Timing(f"{n}, {w}", 1, frames) for n in engines for w in ways}
        for (n, w) in series:
            for _ in range(2):
                ways[w](engines[n], x)
        for r in range(CFG.rounds):
            for n, w in turns(list(series), r):
                series[(n, w)].ms.append(call_ms(lambda n=n, w=w: ways[w](engines[n], x), repeats=1, warm=False))
        out[frames] = {"timings": {t.series: t.summary() for t in series.values()},  # ratio > 1: subject faster
                       "ratios": [paired_ratio(series[(n, "checked")], series[(n, "checked first")]) for n in engines]
                       + [paired_ratio(series[(n, "unchecked")], series[(n, "checked")]) for n in engines]}
    out["refused"] = {n: refuses(e) for n, e in engines.items()}
    return out


def refuses(engine) -> dict:
    """Whether the check refuses a latent holding one NaN / one inf / -inf on this device
    (its one reduction must carry them: runtime.guard)."""
    from vae_engines.core.errors import UserError

    out = {}
    for name, value in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
        x = seeded(125, 3)
        x.view(-1)[x.numel() // 3] = value
        try:
            engine.decode(x, on_range="off")
            out[name] = False
        except UserError:
            out[name] = True
    return out


def package_sweep(engines: dict) -> dict:
    """Each package at every sweep length: its first call there (a reduce-overhead engine
    records a CUDA graph on its second), then the median of 15 calls, as ms per second of audio."""
    out: dict = {n: {"first_call_ms": {}, "ms_per_audio_second": {}} for n in engines}
    for frames in CFG.sweep:
        x = seeded(frames, 1)
        for n, e in engines.items():
            out[n]["first_call_ms"][frames] = round(call_ms(lambda: e.decode(x, check_finite=False), 1, warm=False), 3)
            ms = call_ms(lambda: e.decode(x, check_finite=False), repeats=15)
            out[n]["ms_per_audio_second"][frames] = round(ms / (frames * CFG.hop_s), 4)
    for n, rec in out.items():
        per_s = rec["ms_per_audio_second"]
        worst = max(per_s, key=per_s.get)
        rec["worst_vs_best"] = {"frames": worst, "x_best": round(per_s[worst] / min(per_s.values()), 3)}
    return out


class Run:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.results: dict = {"machine": fingerprint(), "device": devices.describe(CFG.device),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "phases": {}}

    def phase(self, name: str, fn, *args):
        began = time.perf_counter()
        log.info("== %s", name)
        try:
            value = fn(*args)
            self.results["phases"][name] = {"seconds": round(time.perf_counter() - began, 1), "result": value}
        except Exception as exc:  # a phase that fails is reported, and the others still run
            log.error("%s failed: %s", name, exc)
            self.results["phases"][name] = {"seconds": round(time.perf_counter() - began, 1),
                                            "error": traceback.format_exc()[-3000:]}
            value = None
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=str))
        log.info("%s: %.1f s", name, time.perf_counter() - began)
        return value


def experiment_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of the GPU experiments built on this script (benchmarks/experiments/gpu_*.py):
    --out, --ranges (one INT8 variant's ranges.json; quant_of's minmax without it), --rounds, --smoke."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--ranges", type=Path, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="a CPU check of the script (figures mean nothing)")
    return p


def start(args) -> Run:
    """A GPU script's start: --smoke (the CPU check), --rounds, the output folder and its log.txt."""
    if args.smoke:
        CFG.smoke()
    CFG.rounds = args.rounds or CFG.rounds
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "log.txt")])
    return Run(args.out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--ranges", nargs="*", type=Path, default=[], help="INT8 variants' ranges.json (60 s config)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--skip", nargs="*", default=[], help="phases to leave out (sweep, quality, ...)")
    p.add_argument("--explore", action="store_true", help="time EXPLORE's tiles first")
    p.add_argument("--package", action="store_true", help="build, load and time the shipped packages last")
    p.add_argument("--smoke", action="store_true", help="a CPU check of the script (figures mean nothing)")
    args = p.parse_args()
    run = start(args)
    run.results["config"] = {k: str(v) for k, v in vars(Config).items() if not k.startswith("_")}
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    quants = {f"int8 {r.name.split('.')[0]}": quant_of(decoder, r) for r in args.ranges} or \
        {"int8 observed": quant_of(decoder, None)}
    decoder.to("cpu")
    ceiling = run.phase("ceilings", ceilings)
    if args.explore:
        run.phase("explore", explore, decoder, quants)
    tuned = run.phase("tune", tune, decoder)  # first: it compiles the kernels in parallel processes
    if tuned is None:
        return
    run.phase("checks", checks, decoder, quants)
    if "clocks" not in args.skip:
        run.phase("clocks", clocks, decoder, tuned)
    run.phase("table", lambda: table_md(roofline_rows(tuned, decoder, ceiling), tuned, ceiling))
    (args.out / "layer_table.md").write_text(run.results["phases"]["table"].get("result") or "")
    decoders = engines(decoder, quants, tuned)
    for name, fn in (("decode", decode), ("sweep", sweep)):
        if name not in args.skip:
            run.phase(name, fn, decoders)
    if "quality" not in args.skip:
        run.phase("quality", quality, decoder, decoders)
    decoders = None
    if args.package:
        run.phase("package", package, decoder, quants, tuned, args.out)
    log.info("done")


if __name__ == "__main__":
    main()
