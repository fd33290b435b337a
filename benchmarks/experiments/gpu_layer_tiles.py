"""Layer and unit tiles beyond the tuner's candidates, tuned and shipped in one process on a GPU (issue 36:
the fp16 engine's 16 ms, and INT8's margin over it).

    python3 benchmarks/experiments/gpu_layer_tiles.py --out DIR [--ranges R.ranges.json] [--rounds N]
        [--widen fp16 int8] [--what layers units] [--extra wide|regcap] [--skip packages] [--smoke]

The layers outside the fused units (the first convolution, the five upsamplers, the twelve k=7 and k=1
layers of blocks 0-1, the output convolution) took 6 of the fp16 engine's 16.7 ms of kernels on the
H100 (results/gpu_units/h100_run5_lean/package_profile), and block 0's k=7 layers ran at 460 TFLOP/s
where cuBLAS reaches 764 at the same GEMM shape (h100_run17's layer table). Offline for sm_90 (Triton 3.6)
the fp16 tile they chose, 128x128x64 over 4 warps in 4 stages, holds 131 KB of shared memory: one
warpgroup per multiprocessor. EXTRA adds tiles that keep two warpgroups on a multiprocessor (two
programs of 3 stages, or one of 8 warps) and larger ones; none spills (registers <= 255, no local
memory).

UNIT_EXTRA does the same for the residual-unit kernel. The fp16 unit the tuner chose at blocks 3-4
(128 rows over 8 warps) compiles to 25.6 machine instructions per output element for sm_90 (a static
count). Over one warpgroup, the int8 unit's shape, the same 128 rows take 20.4-23.2: each thread holds
four rows of every column it touches, and issues two 64-row wgmma per K step. Two programs still fit a
multiprocessor (249-255 registers, 64-96 KB). Three of the tiles keep a 48-byte stack (11 STL and 11
LDL); the BN2 = 32 ones none. `--what` picks which of the two widen.

REGCAP (`--extra regcap`, in place of EXTRA) caps the 8-warp 3-stage layer tile at 128 registers a
thread. Run 20 (gpu_gemm_ceiling.py) timed the fp16 k=7 layer alone at each block's 60 s shape: in
128x128x64x8x3 its Snake epilogue took it to 1.25-1.55x the time of a plain store, where the 4-warp
tiles took 1.00-1.13x. Offline the Snake takes that tile from 108 to 166 registers: 256 threads then
hold more than half a multiprocessor's registers, and one program runs where two did. The tuner ships
that tile for the first convolution, the upsamplers of blocks 1-3 and block 1's k=1 layers.

The tune runs once with compiled.tune's candidates widened by EXTRA and UNIT_EXTRA. From that one
record come two choices per kind: "old", each layer's fastest among the tuner's own candidates (each
unit's choice redone against its layers' old sum), and "new", the fastest of all. Phases, each writing
DIR/results.json as it ends:
1. ceilings, 2. tune (widened), 3. choices: the layers and units whose tile changed, with their tune times;
4. layers: each changed layer and unit timed alone in both tiles, in turns (median of 11);
5. table: the layer table with its roofline column for the new choice (DIR/layer_table.md);
6. decode: fp16 and INT8 module graphs, old and new, rounds taking turns, ratios; quality of each
   against eager fp32 at the encoder's scale;
7. packages: the four as the pipeline ships them, 60 s rounds taking turns, ratios, lengths.
--smoke runs it on the CPU (small model, Triton's interpreter): it checks the script only.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_units  # noqa: E402
from gpu_units import CFG, kernel_ms, seeded  # noqa: E402
from layer_table import roofline_rows, table_md  # noqa: E402

from vae_engines.compiled import tune as tuner  # noqa: E402
from vae_engines.compiled.tune import (LAYERS, all_int8, candidates, label, layer_frames, layer_inputs,  # noqa: E402
                                       tile_of, tiles_for, unit_candidates)
from vae_engines.core import device as devices  # noqa: E402
from vae_engines.measure.timing import paired_ratio  # noqa: E402
from vae_engines.metrics import peak_psnr  # noqa: E402
from vae_engines.model.fused import FusedDecoder, unit_of  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_layer_tiles")
EXTRA = {  # (BM, BN, BK, warps, stages); sm_90 registers / shared KB of a k=7 layer (fp16, int8 in flight)
    "fp16": ((128, 128, 64, 4, 3),    # 173 / 98: two programs a multiprocessor (the 4-stage one holds 131)
             (64, 128, 64, 4, 3),     # 102 / 74: two or three programs
             (256, 128, 64, 8, 3),    # 240 / 147: two warpgroups of 128 x 128
             (256, 128, 64, 8, 4),    # 240 / 197
             (128, 256, 64, 8, 4),    # 178 / 197
             (128, 128, 128, 8, 3)),  # 165 / 197: half the loop's iterations
    "int8": ((128, 128, 128, 4, 3),   # 238 / 98: two programs a multiprocessor
             (256, 128, 128, 8, 4),   # 255 / 197
             (128, 256, 128, 8, 3),   # 239 / 147
             (128, 128, 256, 8, 3)),  # 172 / 197
}
UNIT_EXTRA = {  # (BM, BK, BN2, warps, stages) at 128 channels; sm_90 registers / stack bytes / shared KB,
    # instructions per output element (Triton 3.6; the tuner's fp16 choice 128x64x64x8x3: 117 / 0 / 96, 25.6)
    "fp16": ((128, 64, 32, 4, 3),    # 249 / 0 / 96, 23.2
             (128, 64, 128, 4, 3),   # 255 / 48 / 96, 20.4
             (128, 64, 64, 4, 3),    # 255 / 48 / 96, 21.4
             (128, 64, 32, 4, 2),    # 249 / 0 / 64, 22.9
             (128, 64, 64, 4, 2)),   # 255 / 48 / 64, 21.1
    "int8": (),
}
REGCAP = {  # (BM, BN, BK, warps, stages, persistent, warp-specialized, registers): the 8-warp 3-stage tiles with
    # each thread capped at 128 registers, so that two programs share a multiprocessor. sm_90 registers / stack
    # bytes, without -> with the cap (Triton 3.6, 512 channels): fp16 k=7 166 / 0 -> 128 / 200, k=1 149 / 0 ->
    # 127 / 0; int8 k=7 172 / 0 -> 128 / 0, k=1 196 / 0 -> 128 / 40
    "fp16": ((128, 128, 64, 8, 3, 0, 0, 128),),
    "int8": ((128, 128, 128, 8, 3, 0, 0, 128),),
}
EXTRAS = {"wide": EXTRA, "regcap": REGCAP}
KINDS = ("fp16", "int8")
WHAT = ("layers", "units")


def own_labels(decoder) -> dict[str, dict[str, set[str]]]:
    """kind -> layer or unit -> the labels of the tuner's own candidates there (torch, or a unit's
    separate layers, included)."""
    out = {}
    for kind, quant in (("fp16", None), ("int8", all_int8(decoder))):
        module = FusedDecoder(decoder, quant)
        out[kind] = {layer.spec.name: {label(t) for t in candidates(layer)} for layer in module.layers}
        for i, layer in enumerate(module.layers):
            if unit_candidates(module, i):
                out[kind][unit_of(layer.spec)] = {label(t) for t in unit_candidates(module, i)} | {LAYERS}
    return out


def widen(kinds: list[str], what: list[str], layer_extra: dict = EXTRA) -> None:
    """Add layer_extra's (layers: EXTRA or REGCAP) and UNIT_EXTRA's (units) tiles of `kinds` to the tuner's
    candidates; on a CPU (--smoke) only the first of each."""
    first = 1 if CFG.device.type != "cuda" else None
    for kind in kinds:
        for name, extra, table in (("layers", layer_extra, tuner.CANDIDATES),
                                   ("units", UNIT_EXTRA, tuner.UNIT_CANDIDATES)):
            if name in what:
                table[kind] = tuple(table[kind]) + tuple(t for t in extra[kind][:first] if t not in table[kind])


def restricted(record: dict, allowed: dict) -> dict:
    """The tune record as the tuner's own candidates would have chosen: each layer's fastest among
    `allowed`, then each unit's fastest allowed kernel against its layers' sum in those tiles
    (compiled.tune's rule)."""
    out = copy.deepcopy(record)
    for kind in KINDS:
        entries = out[kind]
        for name, entry in sorted(entries.items(), key=lambda item: bool(item[1].get("unit"))):  # layers first
            ms = {k: v for k, v in entry["ms"].items() if k in allowed[kind][name]}
            if entry.get("unit"):
                ms[LAYERS] = tuner._separate_ms(entries, name)
            entry["ms"], entry["chosen"] = ms, min(ms, key=lambda k: sum(ms[k]))
    return out


def choices(old: dict, new: dict) -> dict:
    """kind -> name -> {old, new, old_ms, new_ms} where the choice differs (tune times per length)."""
    out: dict = {}
    for kind in KINDS:
        for name, entry in new[kind].items():
            was = old[kind][name]["chosen"]
            if entry["chosen"] != was:
                out.setdefault(kind, {})[name] = {"old": was, "new": entry["chosen"],
                                                  "old_ms": old[kind][name]["ms"][was],
                                                  "new_ms": entry["ms"][entry["chosen"]]}
    log.info("changed: %s", out)
    return out


def layers(decoder, q: dict, tiles: dict, changed: dict) -> dict:
    """Each layer and unit whose tile changed, timed alone in its old and new tile, in turns (median of 11).
    A unit is timed as its kernel in both, or as its kernel against its two layers in their tiles."""
    out: dict = {}
    for kind, quant in (("fp16", None), ("int8", q)):
        module = FusedDecoder(decoder, quant, tiles["old " + kind]).to(CFG.device).eval()
        rows = layer_frames([layer.spec for layer in module.layers], CFG.frames)
        g = torch.Generator(device=CFG.device).manual_seed(3)
        with torch.inference_mode():
            for i, layer in enumerate(module.layers):
                unit = changed.get(kind, {}).get(unit_of(layer.spec) or "")
                c = changed.get(kind, {}).get(layer.spec.name)
                in_unit = module.unit_tiles[i] or (i and module.unit_tiles[i - 1])
                if (layer.x_scale > 0) != (kind == "int8") or (unit is None and (c is None or in_unit)):
                    continue
                x, residual = layer_inputs(layer, rows[i], CFG.device, g)
                if unit is not None:
                    stream = torch.randn(1, rows[i], layer.weight.shape[0], generator=g, device=CFG.device,
                                         dtype=torch.float16)
                    out[f"{kind} {unit_of(layer.spec)}"] = timed(unit, lambda: unit_or_layers(module, i, x, stream),
                                                                 lambda t: module.unit_tiles.__setitem__(i, t))
                    module.unit_tiles[i] = tile_of(unit["old"])
                else:
                    out[f"{kind} {layer.spec.name}"] = timed(c, lambda: layer(x, residual),
                                                             lambda t: setattr(layer, "tile", t))
                x = residual = stream = None
        module = None
        gpu_units.sync()
    return out


def unit_or_layers(module, i: int, x, stream):
    """Residual unit i of `module` as one kernel in its unit tile, or where it has none ("layers") as its
    two layers in theirs."""
    if module.unit_tiles[i]:
        return module._unit(i, x, stream)
    return module.layers[i + 1](module.layers[i](x)[1], stream)  # the k=7 layer returns (y, s)


def timed(change: dict, call, use) -> dict:
    """`call` with use(old tile) and use(new tile), in turns (median of 11 each; the faster of two
    turns)."""
    times: dict = {}
    for which in ("old", "new", "old", "new"):
        use(tile_of(change[which]))
        times.setdefault(which, []).append(kernel_ms(call, repeats=11))
    out = {"old": change["old"], "new": change["new"], "old_ms": round(min(times["old"]), 4),
           "new_ms": round(min(times["new"]), 4), "speedup": round(min(times["old"]) / min(times["new"]), 3)}
    log.info("%s", out)
    return out


def engines(decoder, q: dict, tiles: dict) -> dict:
    return {name: FusedDecoder(decoder, None if name.endswith("fp16") else q, t).to(CFG.device).eval()
            for name, t in tiles.items()}


PAIRS = (("new fp16", "old fp16"), ("new int8", "old int8"), ("new int8", "new fp16"), ("old int8", "old fp16"))


def decode(decoder, q: dict, tiles: dict) -> dict:
    fused = engines(decoder, q, tiles)
    timings = gpu_units.rounds(fused, CFG.frames, CFG.rounds)
    latents = [seeded(CFG.frames, s, 0.027) for s in (20, 21)]
    reference = decoder.to(CFG.device).eval()
    with torch.inference_mode(), devices.exact_fp32():
        expected = [reference(x).float().cpu().numpy() for x in latents]
    reference.to("cpu")
    with torch.inference_mode():
        psnr = {name: round(float(np.mean([peak_psnr(e, m(x).float().cpu().numpy())
                                           for e, x in zip(expected, latents)])), 2) for name, m in fused.items()}
    return {"frames": CFG.frames, "timings": {k: t.summary() for k, t in timings.items()},
            "ratios": [paired_ratio(timings[a], timings[b]) for a, b in PAIRS], "psnr_encoder_scale": psnr}


def packages(decoder, q: dict, records: dict, out: Path) -> dict:
    result, loaded = {}, {}
    for name, record in records.items():
        shipped, built = gpu_units.ship(decoder, {name: None if name.endswith("fp16") else q}, record, out)
        result.update(shipped)
        loaded.update(built)
    return {**result, **gpu_units.compare_packages(loaded, PAIRS, out)}


def main() -> None:
    p = gpu_units.experiment_parser(__doc__)
    p.add_argument("--skip", nargs="*", default=[], help="phases to leave out (packages, ...)")
    p.add_argument("--widen", nargs="*", default=list(KINDS), choices=KINDS,
                   help="the kinds whose candidates EXTRA widens (the other's old and new engines are the same)")
    p.add_argument("--what", nargs="*", default=list(WHAT), choices=WHAT,
                   help="widen the layers' candidates (EXTRA), the units' (UNIT_EXTRA), or both")
    p.add_argument("--extra", default="wide", choices=EXTRAS,
                   help="the layers' extra tiles: EXTRA (wide, run 19) or REGCAP (regcap, run 20)")
    args = p.parse_args()
    run = gpu_units.start(args)
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    q = gpu_units.quant_of(decoder, args.ranges)
    decoder.to("cpu")
    allowed = own_labels(decoder)
    widen(args.widen, args.what, EXTRAS[args.extra])
    run.results["extra"] = {f"{what} {k}": [list(t) for t in (EXTRAS[args.extra] if what == "layers" else
                                                              UNIT_EXTRA)[k]] for k in args.widen for what in args.what}
    ceiling = run.phase("ceilings", gpu_units.ceilings)
    new = run.phase("tune", gpu_units.tune, decoder)
    if new is None:
        return
    old = restricted(new, allowed)
    run.results["old_record"] = old
    changed = run.phase("choices", choices, old, new)
    tiles = {"old fp16": tiles_for(old, set()), "new fp16": tiles_for(new, set()),
             "old int8": tiles_for(old, set(q)), "new int8": tiles_for(new, set(q))}
    run.phase("layers", layers, decoder, q, tiles, changed or {})
    table = run.phase("table", lambda: table_md(roofline_rows(new, decoder, ceiling), new, ceiling))
    (args.out / "layer_table.md").write_text(table or "")
    run.phase("decode", decode, decoder, q, tiles)
    if "packages" not in args.skip:
        records = {"old fp16": old, "new fp16": new, "old int8": old, "new int8": new}
        run.phase("packages", packages, decoder, q, records, args.out)
    log.info("done")


if __name__ == "__main__":
    main()
