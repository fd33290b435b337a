"""The residual-unit kernel with fewer fp16 roundings inside it (issue 36), one process on a GPU.
A record: it ran at e0fb962 (levels) and 670e1a0 (--ab), where kernels.triton_unit had the LEAN
switch it sets; level 2 won and is now the kernel's only arithmetic, and the switch is gone
(benchmarks/results/gpu_units/h100_run13_lean/, results/README.md "Fewer roundings in the unit").
It ran a third time at e051663 (--switch HOIST --ab 1), where the kernel had a HOIST switch, a
fourth at 01dce89 (--switch triton_conv.PDL --ab 1), where the kernels had a PDL switch, and a fifth
at 2054dd7 (--switch EPI --ab 3): none paid, and the switches are gone.

    python benchmarks/experiments/gpu_unit_lean.py --out DIR [--ranges R.ranges.json] [--smoke]

Why: the Triton unit kernel is bound by instruction issue and latency, and about three quarters
of what it issues is its epilogue's per-element arithmetic (results/README.md, "Where the Triton
unit's instructions go"). Part of that is rounding to fp16 and back: the unit computes what its
two layers compute, and the k=7 layer's output is an fp16 tensor there, so the unit rounds it
before Snake1 and Snake1's result before quantizing it -- a tensor that never reaches memory. The
levels (kernels.triton_unit.LEAN, which this script sets):
  0  as shipped: every rounding of the two-layer arithmetic;
  1  the k=7 output through Snake1 to the k=1 layer's operand in fp32 (int8: quantized straight
     from fp32; fp16: rounded once): sm_90 machine code 38.0 -> 35.3 instructions per output
     element (int8 128x128x128x4x3), 28.6 -> 27.1 (fp16 128x64x64x8x3), offline with Triton 3.6;
  2  also Snake2 from the fp32 sum (the residual stream is still stored in fp16) and, for an
     int8 consumer, quantized without the fp16 rounding: 32.3 and 25.6;
  9  an ablation, wrong numerics: level 2 with each sine replaced by its argument (28.8, 21.6):
     what the sines cost, so what any further trimming could buy. Timed, never decoded.
Level 1 keeps the kernel within kernels.op.TOLERANCES of its two layers on the test models;
level 2 moves 2.2% of the small int8 test unit's next-layer codes by one step (the contract
allows 1%): what a fused Snake + QuantizeLinear does in an engine that never stores the fp16
tensor between them, but not what the Q/DQ graph's separate nodes do. Its held-out quality
decides whether that matters.

Full-size seeded decoder, engines as gpu_units.py builds them, INT8 minmax over two seeded
latents (or --ranges). Phases, each writing DIR/results.json as it ends:
1. tune: compiled.tune's choice at 250 and 1500 frames, at level 0 (in child processes);
2. layers: every layer and unit in its tuned tile at 1500 frames, levels 0, 1, 2 and 9 in
   turns (experiments/gpu_epilogue.layers; only the units change with the level, so the other
   layers' columns are the run's noise floor);
3. checks: the unit kernels against the CPU reference of their two layers, levels 0-2;
4. decode: 60 s decodes of fp16 and INT8 at levels 0-2, rounds taking turns, ratios with 95%
   intervals; device memory;
5. quality: peak PSNR against eager fp32 and against level 0's engine of the same kind;
6. package: the fp16 and INT8 engines as the pipeline ships them (gpu_units.package), at the
   level whose INT8 decode was fastest of those within 0.1 dB of level 0's quality (--package
   LEVEL to name one).
With --ab LEVEL it does this instead: the tune at level 0 and at LEVEL (each level's own
tiles), every layer and unit in level 0's tiles at both levels (as phase 2), then the fp16 and INT8 engines as the pipeline ships them at both levels (four
packages, gpu_units.package's build and load), their 60 s decodes in --rounds rounds taking
turns (ratios with 95% intervals), and the sweep of lengths for each: shipped engine against
shipped engine, in one process.
--switch HOIST times kernels.triton_unit.HOIST's levels instead (the k=7 epilogue's per-column
vectors loaded before the k=7 loop: 1), with --ab 1; --switch triton_conv.PDL sets that module's
switch (programmatic dependent launch for every fused kernel: 1). A fifth run, at 2054dd7
(--switch EPI --ab 3 --unit-tiles ...), timed the k=1 chunks as a loop Triton pipelines in 3
stages (kernels.triton_unit.EPI then): no measurable difference, withdrawn
(gpu_units/h100_run15_epi/).
--smoke runs it on the CPU (small model, Triton's interpreter): it checks the script only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_epilogue as epi  # noqa: E402  (puts benchmarks/ on the path; gpu_units reads --smoke)
import gpu_units  # noqa: E402
import torch  # noqa: E402
from gpu_units import CFG, Run, quant_of, seeded  # noqa: E402

from vae_engines.compiled.tune import tiles_for  # noqa: E402
from vae_engines.kernels import triton_unit  # noqa: E402
from vae_engines.measure.timing import paired_ratio  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.fused import FusedDecoder  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_unit_lean")
LEVELS = [0, 1, 2]
ABLATION = 9
QUALITY_DB = 0.1  # the bar for a fused unit against today's engine of the same variant


SWITCH = ["LEAN"]  # the kernel module's switch the levels set (--switch)


class UnitLean:
    """The switch (triton_unit.LEAN, or --switch's) set for the calls (and graph captures) inside
    the block; it stands in for gpu_epilogue's switch, so that script's phases time these levels."""

    def __init__(self, level: int) -> None:
        self.level = level

    def __enter__(self) -> None:
        self.module, self.name = switch_of(SWITCH[0])
        self.before = getattr(self.module, self.name, 0)
        setattr(self.module, self.name, self.level)

    def __exit__(self, *exc) -> None:
        setattr(self.module, self.name, self.before)


def switch_of(name: str):
    """(module, attribute) of a switch: "LEAN" is kernels.triton_unit's, "triton_conv.PDL" names its module."""
    if "." not in name:
        return triton_unit, name
    module, attribute = name.rsplit(".", 1)
    return importlib.import_module(f"vae_engines.kernels.{module}"), attribute


epi.Lean = UnitLean


def fastest_within_quality(decode: dict | None, quality: dict | None) -> int:
    """The level whose INT8 decode median is lowest among those whose every PSNR (both latent
    scales, fp16 and INT8) is within QUALITY_DB of level 0's; 0 where a phase failed."""
    if not decode or not quality:
        return 0
    ok = []
    for level in LEVELS:
        held = all(scores[f"{kind} L{level}"] >= scores[f"{kind} L0"] - QUALITY_DB
                   for scores in (quality["unit_normal"], quality["encoder_scale_0.027"]) for kind in ("fp16", "int8"))
        if held:
            ok.append((decode["timings"][f"int8 L{level}"]["median_ms"], level))
    return min(ok)[1] if ok else 0


class AtLevel:
    """A loaded package whose every decode runs at one level (CUDA graphs record at the first
    calls of a length, so those must run at the package's level too)."""

    def __init__(self, engine, level: int) -> None:
        self.engine, self.level = engine, level

    def decode(self, x, **kw):
        with UnitLean(self.level):
            return self.engine.decode(x, **kw)


def packages(decoder, quants: dict, tuned: dict[int, dict], out: Path) -> dict:
    """fp16 and INT8 packages at each level of `tuned` (its own tiles), built, loaded, checked
    against their modules, and timed in rounds taking turns; ratios level / level 0 and INT8 / fp16."""
    from vae_engines.compiled.build import build_package
    from vae_engines.core.params import ProfileParams
    from vae_engines.runtime import load
    from vae_engines.runtime.base import Shape

    shape = Shape(channels=64, hop=1920, sampling_rate=48000)
    profile = ProfileParams(min_frames=125 if CFG.device.type == "cuda" else 2, opt_frames=CFG.frames,
                            max_frames=CFG.frames)
    mode = "reduce-overhead" if CFG.device.type == "cuda" else "default"
    result: dict = {}
    engines: dict[str, AtLevel] = {}
    for level, record in tuned.items():
        for kind, quant in {"fp16": None, **quants}.items():
            name = f"{kind} L{level}"
            tiles = tiles_for(record, set(quant or {}))
            path = out / f"{kind}_L{level}.pt2"
            began = time.perf_counter()
            with UnitLean(level):
                built = build_package(decoder, shape, precision="fp16", mode=mode, device=CFG.device,
                                      profile=profile, path=path, model="seeded acestep-1.5 (seed 0)", kernels="fused",
                                      quant=quant, variant=kind if quant else None, tiles=tiles)
                engine = AtLevel(load(path, on_range="off") if quant else load(path), level)
                module = FusedDecoder(decoder, quant, tiles).to(CFG.device).eval()
                x = seeded(CFG.frames, 30, 0.027)
                with torch.inference_mode():
                    agree = peak_psnr(module(x).float().cpu().numpy(),
                                      engine.decode(x, check_finite=False).float().cpu().numpy())
            module = None
            engines[name] = engine
            result[name] = {"build_s": round(time.perf_counter() - began, 1), "fused_units": built.get("fused_units"),
                            "tiles": {k: v for k, v in tiles.items() if ".res_unit" in k and "conv" not in k},
                            "package_vs_module_db": round(float(agree), 2)}
    timings = gpu_units.package_rounds(engines)
    result["timings"] = {n: t.summary() for n, t in timings.items()}
    levels = list(tuned)
    result["ratios"] = [paired_ratio(timings[f"{k} L{lv}"], timings[f"{k} L{levels[0]}"])
                        for lv in levels[1:] for k in ["fp16", *quants]]
    result["ratios"] += [paired_ratio(timings[f"{k} L{lv}"], timings[f"fp16 L{lv}"]) for lv in levels for k in quants]
    result["sweep"] = gpu_units.package_sweep(engines)
    for p in out.glob("*.pt2*"):
        p.unlink()
    return result


def ab(args, run: Run, decoder, quants: dict) -> None:
    """--ab: each level's own tune, every layer and unit in level 0's tiles at both levels, then
    the shipped packages of both levels side by side."""
    tuned = {}
    for level in (0, args.ab):
        with UnitLean(level):
            tuned[level] = run.phase(f"tune L{level}", gpu_units.tune, decoder)
        if tuned[level] is None:
            return
    epi.LEVELS[:] = [0, args.ab]
    run.phase("layers", epi.layers, decoder, quants, tuned[0])
    run.phase("packages", packages, decoder, quants, tuned, args.out)


def add_unit_tiles(spec: str) -> None:
    """--unit-tiles: extra candidates for compiled.tune's unit tuner (both levels get them)."""
    from vae_engines.compiled import tune

    for item in filter(None, spec.split(",")):
        kind, tile = item.split(":")
        tune.UNIT_CANDIDATES[kind] = (*tune.UNIT_CANDIDATES[kind], tuple(int(v) for v in tile.split("x")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--ranges", type=Path, default=None)
    p.add_argument("--package", type=int, default=None, metavar="LEVEL")
    p.add_argument("--ab", type=int, default=None, metavar="LEVEL")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--switch", default="LEAN", help="the switch the levels set: a kernels.triton_unit attribute, "
                   "or module.ATTRIBUTE of vae_engines.kernels")
    p.add_argument("--unit-tiles", default="", help="more unit tiles for both levels' tunes, kind:BMxBKxBN2xWxS "
                   "comma-separated (fp16:128x64x32x8x3,int8:128x128x64x4x3)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    add_unit_tiles(args.unit_tiles)
    if args.smoke:
        CFG.smoke()
    CFG.rounds = args.rounds or CFG.rounds
    SWITCH[0] = args.switch
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "log.txt")])
    run = Run(args.out)
    run.results["levels"] = {"timed": LEVELS + [ABLATION], "decoded": LEVELS}
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    quants = {"int8": quant_of(decoder, args.ranges)}
    decoder.to("cpu")
    if args.ab is not None:
        ab(args, run, decoder, quants)
        log.info("done")
        return
    tuned = run.phase("tune", gpu_units.tune, decoder)
    if tuned is None:
        return
    epi.LEVELS[:] = LEVELS + [ABLATION]
    run.phase("layers", epi.layers, decoder, quants, tuned)
    epi.LEVELS[:] = LEVELS
    for level in LEVELS:
        with UnitLean(level):
            run.phase(f"checks L{level}", gpu_units.checks, decoder, quants)
    decoders = epi.engines(decoder, quants, tuned)
    timed = run.phase("decode", epi.decode, decoders)
    scored = run.phase("quality", epi.quality, decoder, decoders)
    decoders = None
    level = args.package if args.package is not None else fastest_within_quality(timed, scored)
    log.info("package at level %d", level)
    with UnitLean(level):
        run.phase(f"package L{level}", gpu_units.package, decoder, quants, tuned, args.out)
    log.info("done")


if __name__ == "__main__":
    main()
