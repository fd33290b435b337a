"""Build a compiled PyTorch engine: the module, export, compile, warm, package.

Two kinds of module run inside (params `compile.kernels`):

- fused (a GPU's default): model.fused.FusedDecoder, every layer one fused-convolution op
  (kernels.op), each layer's implementation chosen by timing on the GPU (compiled.tune);
  fp16, or INT8 for an INT8 variant (compiled.int8 reads its recipe).
- inductor (the CPU's): model.channels_last.ChannelsLastDecoder, the folded decoder as
  channels-last 2-D convolutions that Inductor compiles and fuses itself.

Steps, each a small function: `engine_module` makes the module (and, fused, tunes it);
`exported_program` exports it with the frames axis dynamic over the profile;
`compile_and_warm` compiles it and runs it at the profile's shapes, so every kernel the
engine needs exists; `save_package` writes the exported program with the compiled
artifacts (runtime.compiled says why those and not an AOTInductor package) and the record
beside it. The record carries the fp32 checks the build ran: the package's decode of the
latents `check_latents` names against the fp32 eager decoder.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from vae_engines.compiled.int8 import variant_quant
from vae_engines.compiled.tune import choose_tiles, choose_units, label, tiles_for, tune_tiles
from vae_engines.core import device as devices
from vae_engines.core.choices import FP8_MAX, CompileMode, Kernels, Precision
from vae_engines.core.errors import UserError
from vae_engines.core.env import source_digest, version
from vae_engines.core.fileio import atomic_path, read_json, read_keyed, sha256_file, write_json, write_json_if_changed
from vae_engines.core.lazy import lazy_import
from vae_engines.core.params import ProfileParams
from vae_engines.data.latentset import read_latent_set
from vae_engines.graph.io import latent_range
from vae_engines.kernels import inflight
from vae_engines.metrics import peak_psnr
from vae_engines.model.channels_last import ChannelsLastDecoder
from vae_engines.model.folded import load_folded
from vae_engines.model.fused import FusedDecoder, LayerQuant, layer_specs
from vae_engines.quant.equalize import equalize_module
from vae_engines.runtime.base import Shape
from vae_engines.runtime.compiled import CACHE_FILE, CompiledDecoder
from vae_engines.runtime.eager import EagerDecoder, torch_dtype

torch = lazy_import("torch")
log = logging.getLogger(__name__)

EXECUTED = {Precision.FP32: "fp32 (TF32 off)", Precision.FP16: "fp16 (cuDNN half convolutions, fp32 accumulation)",
            Precision.BF16: "bf16"}


def resolve_kernels(kernels: Kernels, precision: Precision, device: Any) -> Kernels:
    """auto: fused kernels for fp16 on a GPU, Inductor's otherwise."""
    if kernels == Kernels.AUTO:
        return Kernels.FUSED if device.type == "cuda" and precision == Precision.FP16 else Kernels.INDUCTOR
    if kernels == Kernels.FUSED and precision != Precision.FP16:
        raise UserError(f"compile.kernels: fused runs fp16 (and INT8 variants), not {precision}; use kernels: "
                        "inductor for it, or drop it from compile.precisions")
    return kernels


def tuning_frames(profile: ProfileParams) -> list[int]:
    """The lengths each layer's implementation is timed at: the profile's ends and its
    optimum (a choice fast at one length but slow at another loses)."""
    return sorted({profile.min_frames, profile.opt_frames, profile.max_frames})


def fused_executed(module: Any, device: Any, layers: dict) -> str:
    """What a fused engine executes, in words."""
    on_gpu = device.type == "cuda"
    quantized, fp8 = len(module.int8_layers), len(module.fp8_layers)
    int8 = quantized - fp8
    promoted = "never promoted" if fp8 and all(layer.fp8_acc == 0 for layer in module.layers if layer.x_scale > 0) \
        else "promoted to fp32 every K slice"
    cudnn = sum(1 for layer in layers.values() if layer["chosen"] == "torch")
    # sm_90 compiles of the int8 kernels keep one wgmma in flight (kernels.inflight) unless its env switch is off
    in_flight = (int8 and on_gpu and inflight.enabled() and torch.cuda.get_device_capability(device) == (9, 0))
    parts = [f"{int8} layers int8 x int8 -> int32" + (" (one wgmma kept in flight)" if in_flight else "") if int8
             else "",
             f"{fp8} layers fp8 e4m3 x e4m3 -> fp32 (Hopper's reduced-precision sums {promoted})" if fp8 else "",
             f"{len(module.layers) - quantized} layers fp16 with fp32 accumulation"]
    units = len(module.fused_units)
    where = (f"Triton fused kernels ({units} residual units as one kernel each, {cudnn} layers on cuDNN + "
             "separate epilogue)" if on_gpu
             else "the fused op's CPU reference: fp16/int8 storage, fp32 arithmetic")
    return f"{', '.join(p for p in parts if p)}; {where}"


def engine_module(decoder: Any, precision: Precision, kernels: Kernels, device: Any, profile: ProfileParams,
                  quant: dict[str, LayerQuant] | None = None, tiles: dict[str, list[int]] | None = None
                  ) -> tuple[Any, dict]:
    """(the module the engine runs, what the record says of it). tiles: each layer's
    implementation given (an earlier build's choice) instead of timed here."""
    if kernels == Kernels.INDUCTOR:
        module = ChannelsLastDecoder(decoder, torch_dtype(precision)).to(device)
        return module, {"kernels": "inductor", "layout": "channels-last 2-D (NHWC)", "executed": EXECUTED[precision]}
    module = FusedDecoder(decoder, quant, tiles).to(device).eval()
    if tiles is not None:
        layers = {layer.spec.name: {"chosen": label(layer.tile), "ms": {}, "frames": [], "given": True}
                  for layer in module.layers}
        layers.update({unit: {"chosen": label(tiles[unit], unit=True), "ms": {}, "frames": [], "given": True,
                              "unit": True} for unit in module.fused_units})
    elif device.type == "cuda":
        frames = tuning_frames(profile)
        layers = choose_tiles(module, device, frames)
        layers.update(choose_units(module, device, frames, layers))
    else:
        layers = {layer.spec.name: {"chosen": "torch", "ms": {}, "frames": []} for layer in module.layers}
    return module, {"kernels": "fused", "layout": "channels-last [B, T, C]", "layers": layers,
                    "int8_layers": module.int8_layers,
                    "fused_units": module.fused_units, "executed": fused_executed(module, device, layers)}


def exported_program(module: Any, channels: int, device: Any, profile: ProfileParams) -> Any:
    """torch.export of `module`, frames (and batch, where the profile varies it) dynamic."""
    example = torch.zeros(profile.opt_batch, channels, profile.opt_frames, device=device)
    frames = torch.export.Dim("frames", min=profile.min_frames, max=profile.max_frames)
    batch = {0: torch.export.Dim("batch", min=profile.min_batch, max=profile.max_batch)} \
        if profile.max_batch > profile.min_batch else {}
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=({**batch, 2: frames},))


def compile_and_warm(program: Any, mode: CompileMode, profile: ProfileParams, channels: int, device: Any) -> Any:
    """The compiled program, run once at the profile's min, opt and max frames."""
    fn = torch.compile(program.module(), mode=CompileMode(mode).inductor_mode)
    for frames in dict.fromkeys((profile.opt_frames, profile.min_frames, profile.max_frames)):
        x = torch.zeros(profile.opt_batch, channels, frames, device=device)
        if profile.max_frames > profile.min_frames:
            torch._dynamo.maybe_mark_dynamic(x, 2)
        with torch.inference_mode(), devices.exact_fp32():
            fn(x)
    devices.synchronize(device)
    return fn


def save_package(program: Any, path: str | Path, record: dict) -> dict:
    """The exported program and this process's compiled artifacts at `path`, its record
    (plus size and sha256) beside it; both atomic."""
    artifacts = torch.compiler.save_cache_artifacts()
    blob = base64.b64encode(artifacts[0]).decode() if artifacts else ""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp), extra_files={CACHE_FILE: blob})
    record = {**record, "bytes": path.stat().st_size, "sha256": sha256_file(path),
              "compiled_artifacts_bytes": len(artifacts[0]) if artifacts else 0}
    write_json(path.with_suffix(".json"), record)
    return record


SEEDED_NORMAL = "a seeded normal latent, N(0, 1)"


def check_latents(channels: int, frames: int, calibration_dir: str | Path | None = None) -> dict[str, Any]:
    """The latents the build check decodes, by what they are: the first calibration window
    (for an INT8 engine: what its ranges were calibrated on), and a seeded normal latent.

    A normal latent can lie far outside the ranges an INT8 variant was calibrated for: the
    seeded full-size model encodes music to latents of std 0.027 and max |x| 0.09, so N(0, 1)
    saturates the int8 input of the first convolution, and its figure (27 dB on the lent
    H200, issue 30) measures that clipping, not the engine (measure.agreement shows where)."""
    out = {}
    if calibration_dir is not None:
        window = read_latent_set(calibration_dir)[:1, :, :frames]
        out[f"calibration window 0 of {Path(calibration_dir).as_posix()}"] = torch.from_numpy(window)
    out[SEEDED_NORMAL] = torch.randn(1, channels, frames, generator=torch.Generator().manual_seed(0))
    return out


def check_decode(path: Path, decoder: Any, shape: Shape, latents: dict[str, Any], device: Any) -> dict[str, dict]:
    """Each named latent's max |x| and the peak PSNR (dB) of the package's decode of it
    against fp32 eager. The range guard is off: the normal latent may lie beyond an INT8
    engine's range on purpose (check_latents), and its figure says what that costs."""
    reference = EagerDecoder(decoder, shape, Precision.FP32, device)
    engine = CompiledDecoder(path, on_range="off")
    return {name: {"latent_absmax": round(float(latent.abs().max()), 4),
                   "psnr_vs_fp32_db": round(peak_psnr(reference.decode(latent), engine.decode(latent)), 2)}
            for name, latent in latents.items()}


def int8_input_range(decoder: Any, quant: dict[str, LayerQuant] | None, input_range: float | None) -> float | None:
    """The latent range an INT8 engine guards (runtime.guard): `input_range` as given (a
    variant's calibrated range of the latent), else the first layer's int8 input scale x 127;
    None for a float engine (or an INT8 one whose first layer stays fp16 and no range is given)."""
    if quant is None:
        return None
    if input_range is not None:
        return float(input_range)
    first = quant.get(layer_specs(decoder)[0].name)
    largest = FP8_MAX if first is not None and first.fp8 else 127
    return round(first.input_scale * largest, 7) if first is not None and first.input_scale > 0 else None


def build_package(decoder: Any, shape: Shape, *, precision: Precision, mode: CompileMode, device: Any,
                  profile: ProfileParams, path: str | Path, model: str, kernels: Kernels = Kernels.AUTO,
                  quant: dict[str, LayerQuant] | None = None, variant: str | None = None,
                  tiles: dict[str, list[int]] | None = None, calibration_dir: str | Path | None = None,
                  input_range: float | None = None) -> dict:
    """The compiled engine of folded `decoder` (model.oobleck.fold_decoder) at `path`.

    shape: the runtime Shape facts (channels, hop, sampling rate); model: where the weights
    came from (provenance); quant + variant: an INT8 engine of that variant (fused kernels);
    tiles: the fused layers' implementations, given rather than timed; calibration_dir: the
    variant's calibration windows, which the check decodes first (check_latents);
    input_range: the calibrated max |x| of the latent, which the engine guards
    (int8_input_range). Returns the record written beside the package."""
    torch.compiler.reset()
    kernels = Kernels.FUSED if quant is not None else resolve_kernels(Kernels(kernels), Precision(precision), device)
    start = time.perf_counter()
    module, described = engine_module(decoder, Precision(precision), kernels, device, profile, quant, tiles)
    tuned = time.perf_counter()
    program = exported_program(module, shape.channels, device, profile)
    exported = time.perf_counter()
    compile_and_warm(program, mode, profile, shape.channels, device)
    compiled = time.perf_counter()
    here = devices.describe(device)
    quantized = "fp8" if quant and all(q.fp8 for q in quant.values() if q.input_scale > 0) else "int8"
    record = {"kind": "torch", "precision": f"{quantized}+{precision}" if quant is not None else str(precision),
              "variant": variant, "input_range": int8_input_range(decoder, quant, input_range), **described,
              "mode": str(mode),
              "device": str(device), "device_name": here.get("name", "cpu"),
              "compute_capability": here.get("compute_capability"), "torch": torch.__version__,
              "cuda": here.get("cuda"), "channels": shape.channels, "hop": shape.hop,
              "sampling_rate": shape.sampling_rate, "frames": [profile.min_frames, profile.max_frames],
              "batch": [profile.min_batch, profile.max_batch], "tune_seconds": round(tuned - start, 2),
              "export_seconds": round(exported - tuned, 2), "compile_seconds": round(compiled - exported, 2),
              "model": model}
    record = save_package(program, path, record)
    checks = check_decode(Path(path), decoder, shape, check_latents(shape.channels, profile.opt_frames,
                                                                    calibration_dir), device)
    first = next(iter(checks))
    record.update(checks=checks, check_latent=first, check_psnr_vs_fp32_db=checks[first]["psnr_vs_fp32_db"],
                  check_seconds=round(time.perf_counter() - compiled, 2))
    write_json(Path(path).with_suffix(".json"), record)
    log.info("built %s (%s, %s kernels, %s) in %.1f s: %.1f MB; vs fp32: %s", Path(path).name, record["precision"],
             kernels, mode, compiled - start, record["bytes"] / 1e6,
             "; ".join(f"{c['psnr_vs_fp32_db']:.1f} dB on {name}" for name, c in checks.items()))
    return record


TUNE_SOURCES = ("kernels", "model/fused.py", "compiled/tune.py")  # the code the timed kernels come from


def tuning_key(decoder: Any, device: Any, frames: list[int]) -> dict:
    """What the tune stage's timings depend on: the GPU, torch and Triton, the lengths, the
    decoder's architecture (its parameters' shapes, not their values) and the kernels' code.
    Its other dependencies (the rest of the package, the weights) change no timing."""
    shapes = repr([(name, tuple(p.shape)) for name, p in decoder.named_parameters()]).encode()
    here = devices.describe(device)
    return {"device": [here.get("name"), here.get("compute_capability")], "torch": version("torch"),
            "triton": version("triton"), "frames": frames, "architecture": hashlib.sha256(shapes).hexdigest(),
            "code": source_digest(TUNE_SOURCES)}


def _earlier_tiles(out: str | Path, key: dict) -> dict | None:
    """The record at `out` where it was timed with this very key, else None."""
    return read_keyed(out, key)


def tune_kernels(decoder_path: str | Path, *, device: Any, profile: ProfileParams, out: str | Path,
                 jobs: int = 1) -> dict:
    """The `tune` stage: each decoder layer's fused-kernel tile, fp16 and int8, timed once on
    `device` (compiled.tune; its kernels compiled first in `jobs` processes). Where the record
    already at `out` was timed with the same tuning_key, its timings are kept (DVC re-runs the
    stage on any change in the package). On a CPU the fused op runs its torch reference:
    nothing to tune, and the record says so without loading the model."""
    record = {"device": devices.describe(device), "frames": [], "fp16": {}, "int8": {}}
    if device.type == "cuda":
        loaded = load_folded(decoder_path)
        decoder, frames = loaded.decoder, tuning_frames(profile)
        key = tuning_key(decoder, device, frames)
        earlier = _earlier_tiles(out, key)
        if earlier is not None:
            log.info("tune: nothing the timings depend on changed; %s keeps its tiles", out)
            kept = {**earlier, "model": loaded.description}  # the weights named; their values time nothing
            write_json_if_changed(out, kept)
            return kept
        started = time.perf_counter()
        record.update(frames=frames, **tune_tiles(decoder, device, frames, jobs), key=key,
                      model=loaded.description, seconds=round(time.perf_counter() - started, 1))
    else:
        record["note"] = "a CPU runs the fused op's torch reference: no tiles"
    write_json(out, record)
    return record


def read_tiles(tiles_json: str | Path | None, device: Any) -> dict:
    """The tune stage's record, checked to be this device's."""
    if tiles_json is None:
        return {}
    record = read_json(tiles_json)
    here, there = devices.describe(device), record.get("device", {})
    if (here.get("name"), here.get("compute_capability")) != (there.get("name"), there.get("compute_capability")):
        raise UserError(f"{tiles_json} was tuned on {there.get('name', 'the CPU')}, this is "
                        f"{here.get('name', 'the CPU')}; run dvc repro (the tune stage re-times the layers here)")
    return record


def compile_engine(decoder_path: str | Path, precision: Precision, mode: CompileMode, *, device: Any,
                   profile: ProfileParams, out: str | Path, kernels: Kernels = Kernels.AUTO,
                   tiles_json: str | Path | None = None) -> dict:
    """The `compile@<precision>` stage: the compiled engine of the folded decoder at
    `decoder_path` (model.folded) on `device` (a fused one with the tune stage's tiles, tiles_json)."""
    kernels = resolve_kernels(kernels, precision, device)
    if device.type == "cpu" and precision != Precision.FP32 and kernels == Kernels.INDUCTOR:
        raise UserError(f"compile.precisions: {precision} needs a GPU (the compute device here is the CPU, where "
                        "half-precision convolutions are about 170x slower than fp32); use [fp32] on a CPU")
    tiles = tiles_for(read_tiles(tiles_json, device), set()) if kernels == Kernels.FUSED else None
    loaded = load_folded(decoder_path)
    shape = Shape(channels=loaded.latent_channels, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    return build_package(loaded.decoder, shape, precision=precision, mode=mode, device=device,
                         profile=profile, path=out, model=loaded.description, kernels=kernels, tiles=tiles)


def compile_int8_engine(decoder_path: str | Path, variant: str, ranges_json: str | Path, mode: CompileMode, *,
                        device: Any, profile: ProfileParams, out: str | Path, tiles_json: str | Path | None = None,
                        calibration_dir: str | Path | None = None) -> dict:
    """The `compile_int8@<variant>` stage: the INT8 engine of an INT8 variant (fused kernels,
    its recipe's ranges and int8 layers, compiled.int8; the tune stage's tiles), checked on
    a window of `calibration_dir` (the data its ranges came from) and a normal latent. An fp8
    variant (`format: fp8`) makes the same engine in float8 e4m3fn, which a GPU runs from
    compute capability 8.9."""
    started = time.perf_counter()
    record = read_json(ranges_json)
    if record.get("variant") != variant:
        raise UserError(f"{ranges_json} is the record of variant {record.get('variant')!r}, not {variant!r}; run "
                        "dvc repro")
    fp8 = record.get("format") == "fp8"
    capability = devices.describe(device).get("compute_capability")
    if fp8 and capability is not None and tuple(map(int, capability.split("."))) < (8, 9):
        raise UserError(f"compile.int8: {variant} is an fp8 variant, and this GPU (compute capability {capability}) "
                        "has no float8 tensor cores (8.9+: Ada, Hopper, Blackwell); drop it from compile.int8 here")
    tuned = read_tiles(tiles_json, device)
    loaded = load_folded(decoder_path)
    # an equalized variant's graph carries its per-channel scales folded in: fold the same into the weights
    decoder = equalize_module(loaded.decoder, (record.get("equalization") or {}).get("scales"))
    quant = variant_quant(decoder, record)
    shape = Shape(channels=loaded.latent_channels, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    prepared = round(time.perf_counter() - started, 2)
    built = build_package(decoder, shape, precision=Precision.FP16, mode=mode, device=device, profile=profile,
                          path=out, model=loaded.description, quant=quant, variant=variant,
                          tiles=tiles_for(tuned, set(quant)), calibration_dir=calibration_dir,
                          input_range=latent_range(record))
    # where a variant change's compile goes (issue 37): reading the model and ranges, then the build's own
    # phases (tune, export, compile, check seconds); the stage's wall time less both is the process's start
    built["prepare_seconds"] = prepared
    built["stage_function_seconds"] = round(time.perf_counter() - started, 2)
    write_json(Path(out).with_suffix(".json"), built)
    return built
