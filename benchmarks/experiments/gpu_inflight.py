"""INT8 kernels keeping one wgmma in flight (kernels.inflight) against Triton's own schedule, one
process on a GPU (issue 36: why INT8 misses 1.5x fp16).

    python3 benchmarks/experiments/gpu_inflight.py --out DIR [--ranges R.ranges.json] [--rounds N] [--smoke]

The fused engines of the full-size seeded decoder; INT8 with the variant's ranges (--ranges; else
minmax over two seeded latents). "int8" compiles its kernels with the rewrite (the default),
"int8 plain" with Triton's schedule (VAE_ENGINES_WGMMA_INFLIGHT=0 around each call); both in the
same tiles (the tune, with the rewrite). Phases, each writing DIR/results.json as it ends:
1. tune: compiled.tune's choice at 250 and 1500 frames;
2. exact: every INT8 layer and unit at 1500 frames, both ways on the same inputs: outputs
   bitwise equal (integer sums are exact, their order unchanged); and the 60 s decode;
3. layers: each of them timed alone both ways (median of 11), in turns;
4. binaries: the wgmma.wait_group counts in the PTX of every binary Triton holds, by INFLIGHT;
5. decode: fp16, int8 plain and int8 as CUDA graphs, --rounds rounds taking turns, ratios;
6. packages: fp16, int8 plain and int8 as the pipeline ships them (compiled.build.build_package,
   reduce-overhead), 60 s decodes in rounds taking turns, ratios, and the sweep of lengths.
--smoke runs it on the CPU (small model, Triton's interpreter): it checks the script only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpu_units  # noqa: E402
from gpu_units import CFG, kernel_ms, seeded  # noqa: E402

from vae_engines.compiled.tune import layer_frames, layer_inputs, tiles_for  # noqa: E402
from vae_engines.kernels import inflight  # noqa: E402
from vae_engines.measure.timing import paired_ratio  # noqa: E402
from vae_engines.model.fused import FusedDecoder, unit_of  # noqa: E402
from vae_engines.model.oobleck import fold_decoder, load_vae  # noqa: E402

log = logging.getLogger("gpu_inflight")
PLAIN = "int8 plain"


class switched:  # noqa: N801 (read as a phrase: `with switched(on):`)
    """VAE_ENGINES_WGMMA_INFLIGHT set for the calls inside (launches read it; compiles follow it)."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        self.before = os.environ.get(inflight.ENV)
        os.environ[inflight.ENV] = "1" if self.on else "0"

    def __exit__(self, *exc: object) -> None:
        if self.before is None:
            os.environ.pop(inflight.ENV, None)
        else:
            os.environ[inflight.ENV] = self.before


class Switched(torch.nn.Module):
    """A decoder whose every call runs `with switched(on)`: a CUDA graph records the kernels launched then."""

    def __init__(self, module: torch.nn.Module, on: bool) -> None:
        super().__init__()
        self.module, self.on = module, on

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        with switched(self.on):
            return self.module(latent)


class SwitchedEngine:
    """A loaded package whose decodes run `with switched(on)` (it records its graphs in its first calls)."""

    def __init__(self, engine, on: bool) -> None:
        self.engine, self.on = engine, on

    def decode(self, x, **kw):
        with switched(self.on):
            return self.engine.decode(x, **kw)


def each_kernel(module: FusedDecoder):
    """(name, i, unit?) for each INT8 layer and unit of the engine, in order."""
    for i, layer in enumerate(module.layers):
        if i > 0 and module.unit_tiles[i - 1]:
            continue
        if layer.x_scale > 0:
            unit = unit_of(layer.spec) if module.unit_tiles[i] else None
            yield unit or layer.spec.name, i, unit is not None


def run_kernel(module: FusedDecoder, i: int, unit: bool, rows: int, seed: int, fresh: bool = True):
    """A callable running layer (or unit) i on seeded inputs; `fresh`: each call from the same residual
    stream (a copy first), else adding into it call after call (for timing: the copy would count)."""
    g = torch.Generator(device=CFG.device).manual_seed(seed)
    x, residual = layer_inputs(module.layers[i], rows, CFG.device, g)
    stream = torch.randn(1, rows, module.layers[i].weight.shape[0], generator=g, device=CFG.device,
                         dtype=torch.float16)
    base = (residual.clone() if residual is not None else None, stream.clone())

    def call():
        if unit:
            if fresh:
                base[1].copy_(stream)
            return (module._unit(i, x, base[1]), base[1])
        if residual is not None:
            if fresh:
                base[0].copy_(residual)
            return (module.layers[i](x, base[0]), base[0])
        return module.layers[i](x)
    return call


def as_tuple(out) -> tuple:
    return tuple(t for t in (out if isinstance(out, (tuple, list)) else (out,)) if t is not None and t.numel())


def exact(module: FusedDecoder) -> dict:
    """Each INT8 kernel's outputs with and without the rewrite, on the same inputs: bitwise equal?"""
    rows = layer_frames([layer.spec for layer in module.layers], CFG.frames)
    out = {}
    with torch.inference_mode():
        for name, i, unit in each_kernel(module):
            got = {}
            for on in (False, True):
                call = run_kernel(module, i, unit, rows[i], seed=i)
                with switched(on):
                    got[on] = [t.clone() for t in as_tuple(call())]
            out[name] = all(torch.equal(a, b) for a, b in zip(got[False], got[True]))
        latent = seeded(CFG.frames, 5, 0.027)
        decoded = {}
        for on in (False, True):
            with switched(on):
                decoded[on] = module(latent).clone()
        out["60 s decode"] = bool(torch.equal(decoded[False], decoded[True]))
    log.info("bitwise equal: %s", out)
    return out


def layers(module: FusedDecoder) -> dict:
    """Each INT8 layer and unit timed alone, plain and in flight, in turns (median of 11)."""
    rows = layer_frames([layer.spec for layer in module.layers], CFG.frames)
    out: dict = {}
    with torch.inference_mode():
        for name, i, unit in each_kernel(module):
            call = run_kernel(module, i, unit, rows[i], seed=i, fresh=False)
            times = {}
            for on in (False, True, False, True):
                with switched(on):
                    times.setdefault(on, []).append(kernel_ms(call, repeats=11))
            out[name] = {"tile": module.unit_tiles[i] if unit else module.layers[i].tile,
                         "plain_ms": round(min(times[False]), 4), "inflight_ms": round(min(times[True]), 4)}
            out[name]["speedup"] = round(out[name]["plain_ms"] / out[name]["inflight_ms"], 3)
            log.info("%s: %s", name, out[name])
    out["sum_ms"] = {k: round(sum(v[k] for n, v in out.items()), 3) for k in ("plain_ms", "inflight_ms")}
    return out


def binaries() -> dict:
    """Each wgmma binary Triton compiled in this process, by kernel and operand kind: the distinct
    wgmma.wait_group counts of its PTX (a 1 among them: a wgmma kept in flight)."""
    from vae_engines.kernels import triton_conv, triton_unit

    out: dict = {}
    for fn in (triton_conv.fused_conv_kernel, triton_unit.residual_unit_kernel):
        for entry in getattr(fn, "device_caches", {}).values():
            for kernel in entry[0].values():
                ptx = kernel.asm.get("ptx", "")
                if "wgmma" in ptx:
                    kind = "int8" if ".s32.s8.s8" in ptx else "fp16/fp8"
                    waits = sorted({int(n) for n in re.findall(r"wgmma\.wait_group\.sync\.aligned (\d+)", ptx)})
                    out.setdefault(f"{fn.__name__} {kind}", []).append(waits)
    return out


def decode(decoder, q: dict, tiles: dict) -> dict:
    fused = {"fp16": FusedDecoder(decoder, None, tiles["fp16"]).to(CFG.device).eval()}
    int8 = FusedDecoder(decoder, q, tiles["int8"]).to(CFG.device).eval()
    fused[PLAIN], fused["int8"] = Switched(int8, False), Switched(int8, True)
    timings = gpu_units.rounds(fused, CFG.frames, CFG.rounds)
    pairs = [("int8", "fp16"), (PLAIN, "fp16"), ("int8", PLAIN)]
    return {"frames": CFG.frames, "timings": {k: t.summary() for k, t in timings.items()},
            "ratios": [paired_ratio(timings[a], timings[b]) for a, b in pairs]}


def packages(decoder, q: dict, tuned: dict, out: Path) -> dict:
    result, loaded = {}, {}
    for name, quant, on in (("fp16", None, True), (PLAIN, q, False), ("int8", q, True)):
        with switched(on):
            shipped, engines = gpu_units.ship(decoder, {name: quant}, tuned, out)
        result.update(shipped)
        loaded[name] = SwitchedEngine(engines[name], on)
    return {**result, **gpu_units.compare_packages(loaded, (("int8", "fp16"), (PLAIN, "fp16"), ("int8", PLAIN)), out)}


def main() -> None:
    p = gpu_units.experiment_parser(__doc__)
    p.add_argument("--skip", nargs="*", default=[], help="phases to leave out (packages, ...)")
    args = p.parse_args()
    run = gpu_units.start(args)
    decoder = fold_decoder(load_vae(CFG.model).vae).eval()
    q = gpu_units.quant_of(decoder, args.ranges)
    tuned = run.phase("tune", gpu_units.tune, decoder)
    if tuned is None:
        return
    tiles = {"fp16": tiles_for(tuned, set()), "int8": tiles_for(tuned, set(q))}
    int8 = FusedDecoder(decoder, q, tiles["int8"]).to(CFG.device).eval()
    run.phase("exact", exact, int8)
    run.phase("layers", layers, int8)
    int8 = None
    gpu_units.sync()
    run.phase("decode", decode, decoder, q, tiles)
    run.phase("binaries", binaries)
    if "packages" not in args.skip:
        run.phase("packages", packages, decoder, q, tuned, args.out)
    log.info("done")


if __name__ == "__main__":
    main()
