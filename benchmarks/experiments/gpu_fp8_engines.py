"""FP8 (e4m3) engines beside INT8 and fp16 (issue 36, item 5), one process on a GPU.

    python3 benchmarks/experiments/gpu_fp8_engines.py --out DIR [--ranges R.ranges.json] [--rounds N] [--smoke]

The fused engines of the full-size seeded decoder, every quantized layer and unit in FP8
(compiled.int8's fp8: the INT8 variant's ranges / 448, weights per output channel / 448) in the
tiles the tuner picks for INT8. Engines:
- fp16, INT8 (the variant's ranges, --ranges; else minmax over two seeded latents);
- FP8, Hopper's reduced-precision fp8 sums promoted to fp32 every K slice (the kernels' default);
- FP8 never promoted (LayerQuant.fp8_acc 0): the unit kernel keeps its k=7 wgmma in flight
  then (results/README.md, "FP8 operands in the unit kernel"), at the cost of the adder's precision;
- the INT8 and FP8 engines' torch paths (no Triton tile: the quantized arithmetic in PyTorch,
  cuDNN convolutions in fp16 on the dequantized operands): the Q/DQ simulation each engine's
  quality is held against.
Phases, each writing DIR/results.json as it ends:
1. tune: compiled.tune's choice at 250 and 1500 frames (fp16 and int8 tiles);
2. checks: every FP8 unit kernel candidate against the CPU reference of its two layers;
3. layers: every layer and unit of the INT8, FP8 and unpromoted FP8 engines timed alone at 1500
   frames in its tile (median of 11 calls), in turns;
4. quality: peak PSNR against eager fp32 (TF32 off), two seeded 60 s latents at unit scale and
   two at the encoder's scale (0.027);
5. decode: 60 s decodes as CUDA graphs, --rounds rounds taking turns; ratios with 95% intervals;
6. packages (--package): fp16, INT8 and unpromoted FP8 as the pipeline ships them
   (compiled.build.build_package, reduce-overhead), each against its module, their 60 s decodes in
   rounds taking turns, and the sweep of lengths.
It first ran at 61004a4, where a module switch (kernels.op.FP8_ACC) stood for fp8_acc.
--smoke runs it on the CPU (small model, Triton's interpreter): it checks the script only.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_units  # noqa: E402
from gpu_units import CFG, kernel_ms, seeded  # noqa: E402

from vae_engines.compiled.int8 import layer_quant, observed_quant  # noqa: E402
from vae_engines.compiled.tune import layer_frames, layer_inputs, tiles_for  # noqa: E402
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.core.fileio import read_json  # noqa: E402
from vae_engines.measure.timing import paired_ratio  # noqa: E402
from vae_engines.model.fused import FusedDecoder, unit_of  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_fp8_engines")
UNPROMOTED = "fp8 never promoted"


def quants(decoder, ranges: Path | None) -> dict:
    """INT8, FP8 and unpromoted FP8 LayerQuant of every layer, from one set of ranges."""
    kinds = {"int8": {}, "fp8": {"fp8": True}, UNPROMOTED: {"fp8": True, "fp8_acc": 0}}
    if ranges is None:
        with devices.exact_fp32():
            latents = [seeded(CFG.frames, s) for s in (10, 11)]
            out = {kind: observed_quant(decoder.to(CFG.device), latents, **kw) for kind, kw in kinds.items()}
        decoder.to("cpu")
        return out
    record = read_json(ranges)
    return {kind: layer_quant(decoder, record, **kw) for kind, kw in kinds.items()}


def engines(decoder, q: dict, tuned: dict) -> dict:
    """name -> engine on the device (module docstring)."""
    fused = {name: FusedDecoder(decoder, quant, tiles_for(tuned, set(quant or {}))).to(CFG.device).eval()
             for name, quant in {"fp16": None, **q}.items()}
    for kind in ("int8", "fp8"):
        fused[f"{kind} simulation"] = FusedDecoder(decoder, q[kind], {}).to(CFG.device).eval()
    return fused


def layers(decoder, q: dict, tuned: dict) -> dict:
    """Each layer and unit of the quantized engines alone at CFG.frames, in turns (median of 11)."""
    modules = {k: FusedDecoder(decoder, quant, tiles_for(tuned, set(quant))).to(CFG.device).eval()
               for k, quant in q.items()}
    first = modules["int8"]
    rows = layer_frames([layer.spec for layer in first.layers], CFG.frames)
    out: dict = {}
    with torch.inference_mode():
        for i, layer in enumerate(first.layers):
            unit = unit_of(layer.spec) if first.unit_tiles[i] else None
            if i > 0 and first.unit_tiles[i - 1]:
                continue  # the k=1 layer of a unit timed as one kernel
            name = unit or layer.spec.name
            out[name] = {}
            for kind, module in modules.items():
                g = torch.Generator(device=CFG.device).manual_seed(i)
                x, residual = layer_inputs(module.layers[i], rows[i], CFG.device, g)
                stream = torch.randn(1, rows[i], module.layers[i].weight.shape[0], generator=g, device=CFG.device,
                                     dtype=torch.float16)
                if unit:
                    ms = kernel_ms(lambda m=module: m._unit(i, x, stream), repeats=11)
                else:
                    ms = kernel_ms(lambda m=module: m.layers[i](x, residual), repeats=11)
                out[name][kind] = round(ms, 4)
            log.info("%s: %s", name, out[name])
    modules = first = None
    gpu_units.sync()
    out["sum_ms"] = {k: round(sum(v[k] for n, v in out.items() if n != "sum_ms"), 3) for k in q}
    return out


def decode(fused: dict) -> dict:
    """60 s decodes of the Triton engines as CUDA graphs, rounds taking turns, ratios."""
    timed = {k: v for k, v in fused.items() if not k.endswith("simulation")}
    timings = gpu_units.rounds(timed, CFG.frames, CFG.rounds)
    pairs = [("int8", "fp16"), ("fp8", "fp16"), (UNPROMOTED, "fp16"), ("fp8", "int8"), (UNPROMOTED, "int8"),
             (UNPROMOTED, "fp8")]
    return {"frames": CFG.frames, "timings": {k: t.summary() for k, t in timings.items()},
            "ratios": [paired_ratio(timings[a], timings[b]) for a, b in pairs]}


def quality(decoder, fused: dict) -> dict:
    """gpu_units.quality's peak PSNR against eager fp32, and each engine against its simulation."""
    out = gpu_units.quality(decoder, fused)
    for scores in (out["unit_normal"], out["encoder_scale_0.027"]):
        scores["vs_simulation_db"] = {k: round(scores[k] - scores[f"{k.split(' ')[0]} simulation"], 2)
                                      for k in ("int8", "fp8", UNPROMOTED)}
    return out


def packages(decoder, q: dict, tuned: dict, out: Path) -> dict:
    """fp16, INT8 and unpromoted FP8 packages as the pipeline ships them (module docstring)."""
    result, loaded = gpu_units.ship(decoder, {"fp16": None, "int8": q["int8"], UNPROMOTED: q[UNPROMOTED]}, tuned,
                                    out)
    pairs = (("int8", "fp16"), (UNPROMOTED, "fp16"), (UNPROMOTED, "int8"))
    return {**result, **gpu_units.compare_packages(loaded, pairs, out)}


def main() -> None:
    p = gpu_units.experiment_parser(__doc__)
    p.add_argument("--package", action="store_true", help="also build, load and time the shipped packages")
    args = p.parse_args()
    run = gpu_units.start(args)
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    q = quants(decoder, args.ranges)
    tuned = run.phase("tune", gpu_units.tune, decoder)
    if tuned is None:
        return
    run.phase("checks", gpu_units.checks, decoder, {"fp8": q["fp8"]})
    run.phase("layers", layers, decoder, q, tuned)
    fused = engines(decoder, q, tuned)
    run.phase("quality", quality, decoder, fused)
    run.phase("decode", decode, fused)
    fused = None
    if args.package:
        run.phase("packages", packages, decoder, q, tuned, args.out)
    log.info("done")


if __name__ == "__main__":
    main()
