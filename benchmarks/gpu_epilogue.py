"""The fused kernels' epilogue with and without the quarter-rate conversions (issue 36), one
process on a GPU.

    python benchmarks/gpu_epilogue.py --out DIR [--package] [--smoke]

What changed (kernels.triton_conv.LEAN_EPILOGUE): Snake's sine reduced by an add-subtract
rounding instead of floor (FRND), and int8 codes read off the bits of the rounding sum instead
of a float-to-int conversion (F2I). On sm_90 both replaced instructions run at 16 per clock per
multiprocessor, the sine's own rate, against 128 for the fp32 FMAs; an int8 residual unit did
six of them per element of its output (two FRND, two F2I, two MUFU), now two. The codes are the
same; the sine's remainder too except at half-integer turns (tests/test_kernels.py).

Full-size seeded ACE-Step 1.5 decoder (the 60 s GPU configuration's model), engines as in
benchmarks/gpu_units.py (model.fused.FusedDecoder with the tune stage's choices, CUDA graphs);
INT8: minmax over two seeded latents. Phases, each writing DIR/results.json as it ends:
1. tune: compiled.tune's own choice of tiles and units at 250 and 1500 frames, lean epilogue;
2. layers: every layer and fused unit of the fp16 and INT8 engines in its tuned tile at 1500
   frames, the epilogue off and on taking turns (3 turns of a median of 5 calls each);
3. checks: the unit kernels against the CPU reference, lean (gpu_units.checks);
4. decode: 60 s decodes of the four engines (fp16 / INT8, epilogue off / on), 12 rounds
   taking turns, ratios with 95% intervals; device memory;
5. quality: peak PSNR against eager fp32 (TF32 off), unit-normal and encoder-scale latents,
   and each lean engine against the same engine without;
6. (--package) the fp16 and INT8 engines as the pipeline ships them (gpu_units.package), lean.
--smoke runs it on the CPU (small model, Triton's interpreter): it checks the script only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_units  # noqa: E402  (sets TRITON_INTERPRET for --smoke before torch and Triton load)
import torch  # noqa: E402
from gpu_units import CFG, Run, event_ms, quant_of, rounds, seeded  # noqa: E402

from vae_engines.compiled.tune import layer_frames, layer_inputs, tiles_for  # noqa: E402
from vae_engines.kernels import triton_conv  # noqa: E402
from vae_engines.measure.timing import paired_ratio  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.fused import FusedDecoder, unit_of  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_epilogue")
TURNS = 3


class Lean:
    """The epilogue switch, set for the calls (and graph captures) inside the block."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.before, triton_conv.LEAN_EPILOGUE = triton_conv.LEAN_EPILOGUE, self.on

    def __exit__(self, *exc) -> None:
        triton_conv.LEAN_EPILOGUE = self.before


def modules(decoder, quant, tuned) -> FusedDecoder:
    return FusedDecoder(decoder, quant, tiles_for(tuned, set(quant or {}))).to(CFG.device).eval()


def layers(decoder, quants: dict, tuned: dict) -> dict:
    """Each layer and fused unit in its tuned tile: ms with the epilogue off and on (turns alternate)."""
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
                ms: dict[str, list[float]] = {"off": [], "on": []}
                for _ in range(TURNS):
                    for setting in ("off", "on"):
                        with Lean(setting == "on"):
                            ms[setting].append(event_ms(call))
                table[name] = {"tile": "x".join(map(str, tile)) if tile else "torch",
                               "off_ms": round(float(np.median(ms["off"])), 4),
                               "on_ms": round(float(np.median(ms["on"])), 4)}
                x = residual = None
                i += span
        total = {s: round(sum(r[f"{s}_ms"] for r in table.values()), 3) for s in ("off", "on")}
        out[kind] = {"rows_at": CFG.frames, "layers": table, "sum_ms": total}
        log.info("%s: sum off %.3f on %.3f ms", kind, total["off"], total["on"])
        module = None
    return out


def engines(decoder, quants: dict, tuned: dict) -> dict:
    return {f"{kind} {setting}": modules(decoder, quant, tuned) for kind, quant in {"fp16": None, **quants}.items()
            for setting in ("off", "on")}


class Switched:
    """A module whose calls run with the epilogue switch set as its name says."""

    def __init__(self, name: str, module) -> None:
        self.module, self.on = module, name.endswith(" on")

    def __call__(self, x):
        with Lean(self.on):
            return self.module(x)


def decode(decoders: dict) -> dict:
    timings = rounds({n: Switched(n, m) for n, m in decoders.items()}, CFG.frames, CFG.rounds)
    out = {"frames": CFG.frames, "timings": {k: t.summary() for k, t in timings.items()}, "ratios": []}
    kinds = sorted({n.rsplit(" ", 1)[0] for n in timings})
    for kind in kinds:
        out["ratios"].append(paired_ratio(timings[f"{kind} on"], timings[f"{kind} off"]))
    for kind in kinds:
        if kind != "fp16":
            out["ratios"].append(paired_ratio(timings[f"{kind} on"], timings["fp16 on"]))
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
        out[kind]["on_vs_off"] = {n: round(float(np.mean([peak_psnr(a, b) for a, b in
                                                          zip(got[n.replace(' on', ' off')], got[n])])), 2)
                                  for n in got if n.endswith(" on")}
    reference.to("cpu")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--package", action="store_true")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
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
    run.phase("checks", gpu_units.checks, decoder, quants)
    decoders = engines(decoder, quants, tuned)
    run.phase("decode", decode, decoders)
    run.phase("quality", quality, decoder, decoders)
    decoders = None
    if args.package:
        run.phase("package", gpu_units.package, decoder, quants, tuned, args.out)
    log.info("done")


if __name__ == "__main__":
    main()
