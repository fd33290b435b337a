"""Each layer's implementation in a fused engine, chosen on the GPU it is built for.

For every layer of a model.fused.FusedDecoder, `choose_tiles` times the candidates on
inputs of that layer's shape at a few lengths of the build profile -- the Triton kernel in
each tile of CANDIDATES that fits the layer, and the torch implementation (cuDNN's
convolution, then the epilogue in separate passes) -- and keeps the fastest over those
lengths together. `tune_tiles` does it once per device for both kinds of layer, fp16 and
int8 (the `tune` stage, engines/torch/tiles.json): the fp16 engine and every INT8 variant's
engine then take their layers' tiles from that record (`tiles_for`) instead of each timing
the same shapes again -- a layer's speed depends on its shape and types, not on a variant's
scales. The tile is fixed at build: at run time no length triggers tuning or compilation.

Tiles are (BM, BN, BK, warps, pipeline stages). fp16 takes BK = 64 (one 128-byte row of
fp16 per load), int8 BK = 128 (the same bytes); BN shrinks to the layer's width for the
2-channel output convolution.

Then `choose_units` times each residual unit narrow enough to run as one kernel
(kernels.triton_unit; tiles (BM, BK, BN2, warps, stages)) against its two layers in their
chosen tiles, and keeps the unit kernel where it is faster over the same lengths; the record
holds it under the unit's name ("block.4.res_unit2": "chosen" a unit tile, or "layers").
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import time
from typing import Any

from vae_engines.core.clock import kernel_ms
from vae_engines.core.lazy import lazy_import
from vae_engines.kernels.op import outconv_fits, unit_fits
from vae_engines.model.fused import FusedDecoder, LayerQuant, layer_specs, unit_call, unit_of

torch = lazy_import("torch")
log = logging.getLogger(__name__)

CANDIDATES = {
    "fp16": ((128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (64, 128, 64, 4, 4), (128, 256, 64, 8, 3),
             (128, 64, 64, 4, 4)),
    "int8": ((128, 128, 128, 8, 3), (128, 128, 128, 4, 4), (64, 128, 128, 4, 4), (128, 64, 128, 4, 4),
             (256, 128, 128, 8, 3), (128, 128, 128, 4, 3), (256, 128, 128, 8, 4)),
}
# int8 128x128x128x4x3 keeps two programs (two warpgroups) on a multiprocessor: 98 KB of shared memory
# where the 4-stage tile holds 131 KB. On the H100 it won 21 int8 layers, ConvTransposes by 10-15%, and
# INT8 packages decoded 60 s 1.039-1.043x faster (benchmarks/results/gpu_units/h100_run19_tiles/; there the old
# INT8 package mostly ran right after an fp16 decode, an order that may account for up to the 2% below; in
# run 20 two identical INT8 engines, rounds in both orders, still differed by 2.2-2.7%).
# 256x128x128x8x4 won two k=7 layers of blocks 0-1 by about 1%, inside the spread; it stays because the
# shipped records of that run (h100_run19/) were made with it. fp16's like tile (128x128x64x4x3) won 22
# fp16 layers timed alone, by up to 11%, but its engine was no faster end to end than two identical
# engines differ in one run (2%): not taken.
# Layers whose K loop is at most SHORT_K loads (the upsamplers of blocks 3-4, the k=1 layers from
# block 1 on) also try 2-stage tiles: a deeper pipeline than the loop only holds shared memory, which
# caps the programs a multiprocessor keeps in flight, and these layers are memory-bound. On the H100
# (benchmarks/results/gpu_units/h100_run10_short_k/) int8 64x128x128x4x2 won 12 such layers by 5-33%
# (block.4.conv_t1 0.894 -> 0.734 ms) and fp16 ones 3; persistent 2-stage launches (4 programs per
# multiprocessor) won none and were dropped.
SHORT_K = 4
SHORT_K_CANDIDATES = {
    "fp16": ((64, 128, 64, 4, 2), (128, 128, 64, 4, 2)),
    "int8": ((64, 128, 128, 4, 2), (128, 128, 128, 4, 2)),
}
UNIT_CANDIDATES = {  # (BM, BK, BN2, warps, stages); the last of each kind: the fastest of the H100's explore
    # with the epilogue as it is (benchmarks/results/epilogue/); offline sm_90 in benchmarks/results/gpu_units/.
    # 256-row tiles and the k=7 input loaded through L1 were timed and lost (h100_run7_tiles/)
    "fp16": ((128, 64, 128, 8, 3), (128, 64, 64, 8, 3), (64, 64, 128, 4, 3), (64, 64, 128, 8, 2),
             (128, 64, 128, 8, 2), (128, 64, 128, 8, 4)),
    "int8": ((128, 128, 128, 8, 3), (128, 128, 64, 8, 3), (64, 128, 128, 4, 3), (64, 128, 128, 8, 2),
             (128, 128, 128, 8, 2), (128, 128, 128, 4, 3)),
}
# (BM, BK, warps, stages, programs per multiprocessor) of the output convolution's kernel: the
# fastest of 36 on the H100 for both kinds, within 3% (benchmarks/results/README.md)
OUTCONV_CANDIDATES = ((128, 128, 4, 3, 4), (128, 128, 4, 2, 8), (256, 128, 8, 2, 8), (128, 64, 4, 3, 8))
# how every time in a tune record was taken (the record's "timing"); records without it (before 2026-12-08)
# timed each call from an idle GPU, so each time also held the host's work to launch it
TIMING = ("median of 5 calls after 2 untimed: on a GPU the kernels alone, queued behind a spin that hides the "
          "host's launch work (core.clock); on a CPU the wall clock")
TORCH = "torch"  # the label of the torch implementation (cuDNN's convolution on a GPU)
LAYERS = "layers"  # a unit's label for its two convolutions run as separate layers


def label(tile: list[int], unit: bool = False) -> str:
    return "x".join(map(str, tile)) if tile else (LAYERS if unit else TORCH)


def tile_of(name: str) -> list[int]:
    """The tile a label names ([] for the torch implementation, or a unit's separate
    layers): label's inverse."""
    return [] if name in (TORCH, LAYERS) else [int(v) for v in name.split("x")]


def candidates(layer: Any) -> list[list[int]]:
    """The tiles that fit `layer` (a model.fused.FusedConv), and [] (torch)."""
    n, k = layer.weight.shape
    channels = k // layer.spec.taps
    out: list[list[int]] = [[]]
    kind = "int8" if layer.x_scale > 0 else "fp16"
    tiles = [(t, False) for t in CANDIDATES[kind]] + [(t, True) for t in SHORT_K_CANDIDATES[kind]]
    for (bm, bn, bk, warps, stages, *flags), short in tiles:  # flags: kernels.triton_conv.launch's
        bk = min(bk, channels)
        bn = min(bn, max(16, 1 << (n - 1).bit_length()))
        if channels % bk or (layer.spec.stride and (n // 2) % bn) or bk * (1 if layer.x_scale > 0 else 2) < 16:
            continue
        if short and layer.spec.taps * channels // bk > SHORT_K:
            continue
        tile = [bm, bn, bk, warps, stages, *flags]
        if tile not in out:
            out.append(tile)
    if layer.spec.audio:  # the output convolution: also its own kernel (kernels.triton_outconv), BN 0
        for bm, bk, warps, stages, per_sm in OUTCONV_CANDIDATES:
            bk = min(bk, channels)
            if outconv_fits(n, layer.spec.taps, layer.spec.padding, layer.spec.dilation, channels, bk) is None:
                out.append([bm, 0, bk, warps, stages, per_sm])
    return out


def layer_frames(specs: list[Any], frames: int) -> list[int]:
    """Each layer's input length (rows) for a latent of `frames` frames."""
    out, rows = [], frames
    for spec in specs:
        out.append(rows)
        rows *= spec.stride or 1
    return out


def layer_inputs(layer: Any, rows: int, device: Any, generator: Any) -> tuple[Any, Any]:
    """A random input (and residual) of `layer`'s shape and types at `rows` rows, made on
    `device` (`generator` is that device's): a 60 s decode's last layers take 368 M values."""
    channels = layer.weight.shape[1] // layer.spec.taps
    if layer.x_scale > 0 and layer.weight.dtype == torch.float8_e4m3fn:  # e4m3 values across its range
        x = (torch.randn(1, rows, channels, generator=generator, device=device) * 64).clamp(-448, 448)
        x = x.to(torch.float8_e4m3fn)
    elif layer.x_scale > 0:
        x = torch.randint(-127, 128, (1, rows, channels), generator=generator, dtype=torch.int8, device=device)
    else:
        x = torch.randn(1, rows, channels, generator=generator, device=device, dtype=torch.float16)
    residual = None
    if layer.spec.residual:
        residual = torch.randn(1, rows, layer.weight.shape[0], generator=generator, device=device,
                               dtype=torch.float16)
    return x, residual


def time_call(fn: Any, device: Any, repeats: int = 5, warmup: int = 2) -> float:
    """Median milliseconds of `fn()`: on a GPU its kernels alone, as they run inside a decode's CUDA
    graph (core.clock); on a CPU the wall clock."""
    return kernel_ms(fn, device, repeats, warmup)


def time_layer(layer: Any, rows: int, device: Any, generator: Any) -> float:
    """Median milliseconds of `layer` on a random input of `rows` rows."""
    x, residual = layer_inputs(layer, rows, device, generator)
    return round(time_call(lambda: layer(x, residual), device), 4)


def _time_each(tiles: list[list[int]], use: Any, call: Any, device: Any, timings: dict[str, list[float]],
               failed: dict[str, str]) -> None:
    """For each tile not failed yet: use(tile), then time call() into timings; a tile this GPU
    cannot run (shared memory, registers) is recorded in `failed` with why -- except the torch
    implementation ([]), whose failure is a defect, raised."""
    for tile in tiles:
        if label(tile) in failed:
            continue
        use(tile)
        try:
            timings[label(tile)].append(round(time_call(call, device), 4))
        except Exception as exc:
            if not tile:
                raise
            failed[label(tile)] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def choose_tiles(module: Any, device: Any, frames: list[int]) -> dict[str, dict]:
    """Set each layer's tile on `module` (a FusedDecoder on `device`) to the fastest
    candidate summed over `frames`; returns layer name -> {chosen, ms: {candidate: [ms per
    length]}, frames, failed: {candidate: why}}."""
    specs = [layer.spec for layer in module.layers]
    rows = {f: layer_frames(specs, f) for f in frames}
    generator = torch.Generator(device=device).manual_seed(0)
    record = {}
    with torch.inference_mode():
        for i, layer in enumerate(module.layers):
            tiles = candidates(layer)
            timings: dict[str, list[float]] = {label(t): [] for t in tiles}
            failed: dict[str, str] = {}
            for f in frames:
                x, residual = layer_inputs(layer, rows[f][i], device, generator)
                _time_each(tiles, lambda t: setattr(layer, "tile", t), lambda: layer(x, residual), device, timings,
                           failed)
                x = residual = None  # free this length's inputs before the next length's are drawn
            timings = {k: v for k, v in timings.items() if k not in failed}
            best = min(timings, key=lambda name: sum(timings[name]))
            layer.tile = tile_of(best)
            record[layer.spec.name] = {"chosen": best, "ms": timings, "frames": list(frames), "failed": failed}
            log.info("%s: %s (%s ms)", layer.spec.name, best, timings[best])
    return record


def unit_candidates(module: Any, i: int) -> list[list[int]]:
    """The unit tiles that fit the residual unit whose k=7 convolution is layer i of `module`
    (a FusedDecoder); none where the unit is too wide or mixes an int8 and a float layer."""
    if unit_of(module.layers[i].spec) is None:
        return []
    first, second = module.layers[i], module.layers[i + 1]
    channels = first.weight.shape[0]
    int8 = first.x_scale > 0
    if (second.x_scale > 0) != int8:
        return []
    out: list[list[int]] = []
    for bm, bk, bn2, warps, stages in UNIT_CANDIDATES["int8" if int8 else "fp16"]:
        tile = [bm, min(bk, channels), min(bn2, channels), warps, stages]
        if unit_fits(channels, tile) is None and tile[1] * (1 if int8 else 2) >= 16 and tile not in out:
            out.append(tile)
    return out


def _separate_ms(layers: dict[str, dict], unit: str) -> list[float]:
    """A unit's two layers in their chosen tiles, summed per length (choose_tiles' record)."""
    first, second = layers[f"{unit}.conv1"], layers[f"{unit}.conv2"]
    return [round(a + b, 4) for a, b in zip(first["ms"][first["chosen"]], second["ms"][second["chosen"]])]


def choose_units(module: Any, device: Any, frames: list[int], layers: dict[str, dict]) -> dict[str, dict]:
    """Set module.unit_tiles where a unit kernel beats the unit's two layers (their times in
    `layers`, choose_tiles' record) summed over `frames`; returns unit name -> {chosen, ms,
    frames, failed, unit: True}."""
    specs = [layer.spec for layer in module.layers]
    rows = {f: layer_frames(specs, f) for f in frames}
    generator = torch.Generator(device=device).manual_seed(1)
    record = {}
    with torch.inference_mode():
        for i, layer in enumerate(module.layers):
            tiles = unit_candidates(module, i)
            if not tiles:
                continue
            unit = unit_of(layer.spec)
            timings: dict[str, list[float]] = {label(t): [] for t in tiles}
            failed: dict[str, str] = {}
            for f in frames:
                x, _ = layer_inputs(layer, rows[f][i], device, generator)
                stream = torch.randn(1, rows[f][i], layer.weight.shape[0], generator=generator, device=device,
                                     dtype=torch.float16)
                _time_each(tiles, lambda t: module.unit_tiles.__setitem__(i, t), lambda: module._unit(i, x, stream),
                           device, timings, failed)
                x = stream = None
            timings = {k: v for k, v in timings.items() if k not in failed}
            timings[LAYERS] = _separate_ms(layers, unit)
            best = min(timings, key=lambda name: sum(timings[name]))
            module.unit_tiles[i] = tile_of(best)
            record[unit] = {"chosen": best, "ms": timings, "frames": list(frames), "failed": failed, "unit": True}
            log.info("%s: %s (%s ms)", unit, best, timings[best])
    return record


def _compile_work(work: list[tuple[Any, list[list[int]]]], device_type: str) -> int:
    """Run each (layer, tiles) once at a short length on `device_type`: what compiles every
    kernel those tiles need (Triton keeps them in its on-disk cache). The layers come on the
    meta device (shapes and types: what a kernel is compiled for) and get random values here;
    a ModuleList of two layers is a residual unit, run as one kernel in each unit tile. A tile
    that fails here is left for choose_tiles / choose_units to record. Returns how many calls ran."""
    device = torch.device(device_type)
    generator = torch.Generator(device=device).manual_seed(0)
    calls = 0
    with torch.inference_mode():
        for layer, tiles in work:
            layer = layer.to_empty(device=device)  # it came as shapes and types (meta): values do not matter here
            for buffer in layer.buffers():
                if buffer.is_floating_point():
                    buffer.normal_(0, 0.02, generator=generator)
            unit = isinstance(layer, torch.nn.ModuleList)  # a residual unit's two layers (unit tiles)
            first = layer[0] if unit else layer
            x, residual = layer_inputs(first, max(t[0] for t in tiles) * 2, device, generator)
            if unit:
                residual = torch.randn(x.shape[0], x.shape[1], first.weight.shape[0], generator=generator,
                                       device=device, dtype=torch.float16)
            for tile in tiles:
                try:
                    if unit:
                        unit_call(layer[0], layer[1], x, residual, tile)
                    else:
                        layer.tile = tile
                        layer(x, residual)
                    calls += 1
                except Exception:  # noqa: BLE001  (choose_tiles times it and records why it fails)
                    continue
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return calls


def precompile(module: Any, device: Any, jobs: int) -> int:
    """Compile the Triton kernels of every candidate tile of `module` (a FusedDecoder, still on
    the CPU) in `jobs` processes side by side, so that timing them finds each compiled: Triton
    compiles a kernel per tile and layer kind (~0.5-1 s each on the host, dozens per decoder),
    which is most of a serial tune. Each process takes a share of the layers, one of each
    distinct geometry. Returns the calls made."""
    distinct: dict[tuple, tuple[Any, list[list[int]]]] = {}
    for layer in module.layers:
        tiles = [t for t in candidates(layer) if t]
        s = layer.spec
        key = (tuple(layer.weight.shape), layer.weight.dtype, s.taps, s.dilation, s.padding, s.stride, s.residual,
               s.audio, s.snake is not None, layer.bias is not None, layer.s_scale > 0, layer.res_scale > 0)
        if tiles and key not in distinct:  # sent as shapes and types only: no weights through pipes
            distinct[key] = (copy.deepcopy(layer).to("meta"), tiles)
    for i, layer in enumerate(module.layers):  # the unit kernels, one per distinct unit
        tiles = unit_candidates(module, i)
        if not tiles:
            continue
        second = module.layers[i + 1]
        key = ("unit", tuple(layer.weight.shape), layer.weight.dtype, second.weight.dtype, second.s_scale > 0,
               second.res_scale > 0, layer.bias is not None)
        if key not in distinct:
            distinct[key] = (copy.deepcopy(torch.nn.ModuleList([layer, second])).to("meta"), tiles)
    work = list(distinct.values())
    shares = [work[i::jobs] for i in range(min(jobs, len(work)))]
    if not shares:
        return 0
    context = multiprocessing.get_context("spawn")  # a CUDA context per process: never fork one
    with context.Pool(len(shares)) as pool:
        return sum(pool.starmap(_compile_work, [(share, device.type) for share in shares]))


def all_int8(decoder: Any) -> dict[str, Any]:
    """Every layer int8, with random int8 weights and unit scales: the shapes and kernel
    variants an INT8 engine runs (its timing does not depend on the values)."""
    generator = torch.Generator().manual_seed(0)
    out = {}
    for spec in layer_specs(decoder):
        weight = decoder.get_submodule(spec.name).weight
        channels = weight.shape[1] if spec.stride else weight.shape[0]
        q = torch.randint(-127, 128, tuple(weight.shape), generator=generator, dtype=torch.int8)
        out[spec.name] = LayerQuant(1.0, q, torch.ones(channels), 0.0)
    return out


def tune_tiles(decoder: Any, device: Any, frames: list[int], jobs: int = 1) -> dict[str, Any]:
    """{"fp16": layer -> choose_tiles' record, "int8": likewise, "precompile": what compiled
    ahead, "timing": how the times were taken (TIMING)} for folded `decoder` (on the CPU) on
    `device`; jobs > 1: the kernels compile first in that many processes (precompile)."""
    out: dict[str, Any] = {"precompile": {"jobs": jobs, "seconds": 0.0, "calls": 0}, "timing": TIMING}
    modules = {kind: FusedDecoder(decoder, quant).eval() for kind, quant in (("fp16", None),
                                                                             ("int8", all_int8(decoder)))}
    if jobs > 1:
        started = time.perf_counter()
        calls = sum(precompile(module, device, jobs) for module in modules.values())
        out["precompile"].update(seconds=round(time.perf_counter() - started, 1), calls=calls)
    for kind, module in modules.items():
        module = module.to(device)
        layers = choose_tiles(module, device, frames)
        out[kind] = {**layers, **choose_units(module, device, frames, layers)}
        modules[kind] = module = None  # free its weights on the device before the next kind's
    return out


def tiles_for(record: dict, int8_layers: set[str]) -> dict[str, list[int]] | None:
    """Each layer's tile from a tune_tiles record: the int8 choice for `int8_layers`, the fp16
    one for the rest; None where the record holds none (a CPU: the torch reference runs)."""
    if not record.get("fp16"):
        return None
    out = {}
    for name, fp16 in record["fp16"].items():
        if fp16.get("unit"):  # a unit runs as one kernel only where both its layers are of the kind timed
            int8 = {f"{name}.conv1", f"{name}.conv2"} & int8_layers
            chosen = fp16["chosen"] if not int8 else record["int8"][name]["chosen"] if len(int8) == 2 else LAYERS
        else:
            chosen = record["int8"][name]["chosen"] if name in int8_layers else fp16["chosen"]
        out[name] = tile_of(chosen)
    return out
