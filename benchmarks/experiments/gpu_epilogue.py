"""The fused kernels' epilogue with and without the quarter-rate conversions (issue 36), one
process on a GPU. A record: it ran at commits 5d44735 (levels 0 and 1, then called off / on)
and 07fdc80 (levels 0-2), where kernels.triton_conv had the LEAN_EPILOGUE switch it sets;
level 2 is now the kernels' only epilogue and the switch is gone (benchmarks/results/epilogue/).

    python benchmarks/experiments/gpu_epilogue.py --out DIR [--levels 0 1 2] [--explore] [--package LEVEL]

The levels (kernels.triton_conv.LEAN_EPILOGUE):
  0  as before: Snake's sine reduced to [-pi, pi] with floor (FRND), int8 codes by a
     float-to-int conversion (F2I);
  1  the reduction's turn count by an add-subtract rounding, int8 codes read off the bits of
     the rounding sum: the same codes, the same remainder but at half-integer turns
     (tests/test_kernels.py). On sm_90 FRND and F2I run at 16 per clock per multiprocessor,
     the sine's own rate, against 128 for the fp32 FMAs; an int8 residual unit did six such
     instructions per element of its output (two FRND, two F2I, two MUFU), now two;
  2  level 1 without the explicit reduction: sin.approx of the argument itself (ptxas scales
     it by 1 / (2 pi) for the MUFU, which works in turns), four instructions fewer per sine;
     its error grows with |argument| (about |x| * 2^-23 radians), which the quality phase checks.

Full-size seeded ACE-Step 1.5 decoder (the 60 s GPU configuration's model), engines as in
benchmarks/gpu_units.py (model.fused.FusedDecoder with the tune stage's choices, CUDA graphs);
INT8: minmax over two seeded latents. Phases, each writing DIR/results.json as it ends:
1. tune: compiled.tune's own choice of tiles and units at 250 and 1500 frames, at the
   module's default level;
2. layers: every layer and fused unit of the fp16 and INT8 engines in its tuned tile at 1500
   frames, the levels taking turns (3 turns of a median of 5 calls each);
3. (--explore) the unit tiles of gpu_units.EXPLORE and the tuner's, on one unit of each of
   blocks 2-4, at every level above 0;
4. checks: the unit kernels against the CPU reference (gpu_units.checks), each level;
5. decode: 60 s decodes of fp16 and INT8 at every level, 12 rounds taking turns, ratios with
   95% intervals; device memory;
6. quality: peak PSNR against eager fp32 (TF32 off), unit-normal and encoder-scale latents,
   and each level's engine against level 0's;
7. (--package LEVEL) the fp16 and INT8 engines as the pipeline ships them (gpu_units.package).
--smoke runs it on the CPU (small model, Triton's interpreter): it checks the script only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_units  # noqa: E402  (sets TRITON_INTERPRET for --smoke before torch and Triton load)
import torch  # noqa: E402
from gpu_units import CFG, Run, kernel_ms, quant_of, rounds, seeded  # noqa: E402

from vae_engines.compiled.tune import layer_frames, layer_inputs, tiles_for  # noqa: E402
from vae_engines.kernels import triton_conv  # noqa: E402
from vae_engines.measure.timing import paired_ratio  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.fused import FusedDecoder, unit_of  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_epilogue")
TURNS = 3


LEVELS = [0, 1, 2]


class Lean:
    """The epilogue level, set for the calls (and graph captures) inside the block."""

    def __init__(self, level: int) -> None:
        self.level = level

    def __enter__(self) -> None:
        self.before, triton_conv.LEAN_EPILOGUE = triton_conv.LEAN_EPILOGUE, self.level

    def __exit__(self, *exc) -> None:
        triton_conv.LEAN_EPILOGUE = self.before


def modules(decoder, quant, tuned) -> FusedDecoder:
    return FusedDecoder(decoder, quant, tiles_for(tuned, set(quant or {}))).to(CFG.device).eval()


def layers(decoder, quants: dict, tuned: dict) -> dict:
    """Each layer and fused unit in its tuned tile: ms at each level (turns alternate)."""
    out = {}
    for kind, quant in {"fp16": None, **quants}.items():
        module = modules(decoder, quant, tuned)
        rows = layer_frames([layer.spec for layer in module.layers], CFG.frames)
        g = torch.Generator(device=CFG.device).manual_seed(3)
        table, i = {}, 0
        with torch.inference_mode():
            while i < len(module.layers):
                layer = module.layers[i]
                x, residual = layer_inputs(layer, rows[i], CFG.device, g)
                if module.unit_tiles[i]:
                    name, span = unit_of(layer.spec), 2
                    stream = torch.randn(1, rows[i], layer.weight.shape[0], generator=g, device=CFG.device,
                                         dtype=torch.float16)
                    call = (lambda i=i, x=x, stream=stream: module._unit(i, x, stream))
                    tile = module.unit_tiles[i]
                else:
                    name, span, call, tile = layer.spec.name, 1, (lambda layer=layer, x=x, r=residual: layer(x, r)), \
                        layer.tile
                ms: dict[int, list[float]] = {level: [] for level in LEVELS}
                for _ in range(TURNS):
                    for level in LEVELS:
                        with Lean(level):
                            ms[level].append(kernel_ms(call))
                table[name] = {"tile": "x".join(map(str, tile)) if tile else "torch",
                               **{f"L{level}_ms": round(float(np.median(v)), 4) for level, v in ms.items()}}
                x = residual = None
                i += span
        total = {f"L{level}": round(sum(r[f"L{level}_ms"] for r in table.values()), 3) for level in LEVELS}
        out[kind] = {"rows_at": CFG.frames, "layers": table, "sum_ms": total}
        log.info("%s: sums %s ms", kind, total)
        module = None
    return out


EXPLORE_UNITS = ("block.2.res_unit1", "block.3.res_unit1", "block.4.res_unit1")


def explore(decoder, quants: dict) -> dict:
    """gpu_units.EXPLORE's unit tiles and the tuner's on EXPLORE_UNITS at 1500 frames, each level above 0."""
    from vae_engines.compiled.tune import unit_candidates

    out: dict = {}
    for kind, quant in {"fp16": None, **quants}.items():
        module = FusedDecoder(decoder, quant).to(CFG.device).eval()
        rows = layer_frames([layer.spec for layer in module.layers], CFG.frames)
        g = torch.Generator(device=CFG.device).manual_seed(4)
        with torch.inference_mode():
            for i, layer in enumerate(module.layers):
                if unit_of(layer.spec) not in EXPLORE_UNITS or not layer.spec.name.endswith("conv1"):
                    continue
                x, _ = layer_inputs(layer, rows[i], CFG.device, g)
                stream = torch.randn(1, rows[i], layer.weight.shape[0], generator=g, device=CFG.device,
                                     dtype=torch.float16)
                tiles = [list(t) for t in gpu_units.EXPLORE[f"unit {'int8' if quant else 'fp16'}"]]
                tiles += [t for t in unit_candidates(module, i) if t not in tiles]
                entry = out.setdefault(f"{kind} {unit_of(layer.spec)}", {})
                for tile in tiles:
                    module.unit_tiles[i] = tile
                    for level in [v for v in LEVELS if v > 0]:
                        key = f"{'x'.join(map(str, tile))} L{level}"
                        try:
                            with Lean(level):
                                entry[key] = round(kernel_ms(lambda: module._unit(i, x, stream)), 4)
                        except Exception as exc:  # a tile this GPU cannot run: recorded, not fatal
                            entry[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                module.unit_tiles[i] = []
                best = min((v, k) for k, v in entry.items() if isinstance(v, float))
                log.info("%s %s: best %s %.4f ms", kind, unit_of(layer.spec), best[1], best[0])
                x = stream = None
        module = None
    return out


def engines(decoder, quants: dict, tuned: dict) -> dict:
    return {f"{kind} L{level}": modules(decoder, quant, tuned) for kind, quant in {"fp16": None, **quants}.items()
            for level in LEVELS}


class Switched:
    """A module whose calls run at the level its name ends with (" L<level>")."""

    def __init__(self, name: str, module) -> None:
        self.module, self.level = module, int(name.rsplit(" L", 1)[1])

    def __call__(self, x):
        with Lean(self.level):
            return self.module(x)


def decode(decoders: dict) -> dict:
    timings = rounds({n: Switched(n, m) for n, m in decoders.items()}, CFG.frames, CFG.rounds)
    out = {"frames": CFG.frames, "timings": {k: t.summary() for k, t in timings.items()}, "ratios": []}
    kinds = sorted({n.rsplit(" ", 1)[0] for n in timings})
    for kind in kinds:
        for level in LEVELS[1:]:
            out["ratios"].append(paired_ratio(timings[f"{kind} L{level}"], timings[f"{kind} L{LEVELS[0]}"]))
    for kind in kinds:
        if kind != "fp16":
            for level in LEVELS:
                out["ratios"].append(paired_ratio(timings[f"{kind} L{level}"], timings[f"fp16 L{level}"]))
    if CFG.device.type == "cuda":
        out["memory_gib"] = {}
        for name, m in decoders.items():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            with torch.inference_mode():
                Switched(name, m)(seeded(CFG.frames, 0))
            torch.cuda.synchronize()
            out["memory_gib"][name] = round((torch.cuda.max_memory_allocated() - before) / 2 ** 30, 2)
    return out


def quality(decoder, decoders: dict) -> dict:
    out = {}
    reference = decoder.to(CFG.device).eval()
    for kind, scale in (("unit_normal", 1.0), ("encoder_scale_0.027", 0.027)):
        latents = [seeded(CFG.frames, s, scale) for s in (20, 21)]
        with torch.inference_mode(), gpu_units.devices.exact_fp32():
            expected = [reference(x).float().cpu().numpy() for x in latents]
        with torch.inference_mode():
            got = {n: [Switched(n, m)(x).float().cpu().numpy() for x in latents] for n, m in decoders.items()}
        out[kind] = {n: round(float(np.mean([peak_psnr(e, a) for e, a in zip(expected, g)])), 2)
                     for n, g in got.items()}
        first = f" L{LEVELS[0]}"
        out[kind][f"vs{first}"] = {n: round(float(np.mean([peak_psnr(a, b) for a, b in
                                                           zip(got[n.rsplit(' ', 1)[0] + first], got[n])])), 2)
                                   for n in got if not n.endswith(first)}
    reference.to("cpu")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--levels", nargs="+", type=int, default=LEVELS)
    p.add_argument("--explore", action="store_true")
    p.add_argument("--package", type=int, default=None, metavar="LEVEL")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    LEVELS[:] = args.levels
    if args.smoke:
        CFG.smoke()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "log.txt")])
    run = Run(args.out)
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    quants = {"int8": quant_of(decoder, None)}
    decoder.to("cpu")
    tuned = run.phase("tune", gpu_units.tune, decoder)
    if tuned is None:
        return
    run.phase("layers", layers, decoder, quants, tuned)
    if args.explore:
        run.phase("explore", explore, decoder, quants)
    for level in LEVELS:
        with Lean(level):
            run.phase(f"checks L{level}", gpu_units.checks, decoder, quants)
    decoders = engines(decoder, quants, tuned)
    run.phase("decode", decode, decoders)
    run.phase("quality", quality, decoder, decoders)
    decoders = None
    if args.package is not None:
        with Lean(args.package):
            run.phase(f"package L{args.package}", gpu_units.package, decoder, quants, tuned, args.out)
    log.info("done")


if __name__ == "__main__":
    main()
