"""The residual-unit kernel with fewer fp16 roundings inside it (issue 36), one process on a GPU.

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
--smoke runs it on the CPU (small model, Triton's interpreter): it checks the script only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_epilogue as epi  # noqa: E402  (puts benchmarks/ on the path; gpu_units reads --smoke)
import gpu_units  # noqa: E402
from gpu_units import CFG, Run, quant_of  # noqa: E402

from vae_engines.kernels import triton_unit  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_unit_lean")
LEVELS = [0, 1, 2]
ABLATION = 9
QUALITY_DB = 0.1  # the bar for a fused unit against today's engine of the same variant


class UnitLean:
    """triton_unit.LEAN set for the calls (and graph captures) inside the block; it stands in
    for gpu_epilogue's switch, so that script's phases time this one's levels."""

    def __init__(self, level: int) -> None:
        self.level = level

    def __enter__(self) -> None:
        self.before, triton_unit.LEAN = triton_unit.LEAN, self.level

    def __exit__(self, *exc) -> None:
        triton_unit.LEAN = self.before


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--ranges", type=Path, default=None)
    p.add_argument("--package", type=int, default=None, metavar="LEVEL")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        CFG.smoke()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "log.txt")])
    run = Run(args.out)
    run.results["levels"] = {"timed": LEVELS + [ABLATION], "decoded": LEVELS}
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    quants = {"int8": quant_of(decoder, args.ranges)}
    decoder.to("cpu")
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
