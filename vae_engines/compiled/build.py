"""Build a compiled PyTorch engine: export, compile, warm, package.

Steps, each a small function: `channels_last_program` exports the channels-last decoder
(model.channels_last) in the engine's precision with the frames axis dynamic over the
profile; `compile_and_warm` compiles it with Inductor and runs it at the profile's shapes,
so every kernel the engine will need exists; `save_package` writes the exported program
with the compiled artifacts (runtime.compiled says why those and not an AOTInductor
package) and the record beside it. The record carries the fp32 check the build ran: the
package's decode of a seeded latent against the fp32 eager decoder.
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any

from vae_engines.core import device as devices
from vae_engines.core.choices import CompileMode, Precision
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path, sha256_file, write_json
from vae_engines.core.lazy import lazy_import
from vae_engines.core.params import ModelParams, ProfileParams
from vae_engines.metrics import peak_psnr
from vae_engines.model.channels_last import ChannelsLastDecoder
from vae_engines.model.oobleck import fold_decoder, load_vae
from vae_engines.runtime.base import Shape
from vae_engines.runtime.compiled import CACHE_FILE, CompiledDecoder
from vae_engines.runtime.eager import EagerDecoder, torch_dtype

torch = lazy_import("torch")
log = logging.getLogger(__name__)

EXECUTED = {Precision.FP32: "fp32 (TF32 off)", Precision.FP16: "fp16 (cuDNN half convolutions, fp32 accumulation)",
            Precision.BF16: "bf16"}


def channels_last_program(decoder: Any, precision: Precision, device: Any, profile: ProfileParams) -> Any:
    """torch.export of the channels-last decoder in `precision`, frames dynamic over the profile."""
    module = ChannelsLastDecoder(decoder, torch_dtype(precision)).to(device)
    example = torch.zeros(profile.opt_batch, decoder.conv1.in_channels, profile.opt_frames, device=device)
    frames = torch.export.Dim("frames", min=profile.min_frames, max=profile.max_frames)
    batch = {0: torch.export.Dim("batch", min=profile.min_batch, max=profile.max_batch)} \
        if profile.max_batch > profile.min_batch else {}
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=({**batch, 2: frames},))


def compile_and_warm(program: Any, mode: CompileMode, profile: ProfileParams, channels: int, device: Any) -> Any:
    """The compiled program, run once at the profile's min, opt and max frames."""
    fn = torch.compile(program.module(), mode=str(mode))
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


def check_decode(path: Path, decoder: Any, shape: Shape, frames: int, device: Any) -> float:
    """Peak PSNR (dB) of the package's decode of a seeded latent against fp32 eager."""
    latent = torch.randn(1, shape.channels, frames, generator=torch.Generator().manual_seed(0))
    reference = EagerDecoder(decoder, shape, Precision.FP32, device).decode(latent)
    engine = CompiledDecoder(path)
    return round(peak_psnr(reference.cpu().numpy(), engine.decode(latent).cpu().numpy()), 2)


def build_package(decoder: Any, shape: Shape, *, precision: Precision, mode: CompileMode, device: Any,
                  profile: ProfileParams, path: str | Path, model: str) -> dict:
    """The compiled engine of folded `decoder` (model.oobleck.fold_decoder) at `path`.

    shape: the runtime Shape facts (channels, hop, sampling rate); model: where the weights
    came from (provenance). Returns the record written beside the package."""
    torch.compiler.reset()
    start = time.perf_counter()
    program = channels_last_program(decoder, precision, device, profile)
    exported = time.perf_counter()
    compile_and_warm(program, mode, profile, shape.channels, device)
    compiled = time.perf_counter()
    here = devices.describe(device)
    record = {"kind": "torch", "precision": str(precision), "executed": EXECUTED[precision], "mode": str(mode),
              "device": str(device), "device_name": here.get("name", "cpu"),
              "compute_capability": here.get("compute_capability"), "torch": torch.__version__,
              "cuda": here.get("cuda"), "channels": shape.channels, "hop": shape.hop,
              "sampling_rate": shape.sampling_rate, "frames": [profile.min_frames, profile.max_frames],
              "batch": [profile.min_batch, profile.max_batch], "export_seconds": round(exported - start, 2),
              "compile_seconds": round(compiled - exported, 2), "layout": "channels-last 2-D (NHWC)",
              "model": model}
    record = save_package(program, path, record)
    record["check_psnr_vs_fp32_db"] = check_decode(Path(path), decoder, shape, profile.opt_frames, device)
    write_json(Path(path).with_suffix(".json"), record)
    log.info("built %s (%s, %s) in %.1f s: %.1f MB, %.1f dB vs fp32", Path(path).name, precision, mode,
             compiled - start, record["bytes"] / 1e6, record["check_psnr_vs_fp32_db"])
    return record


def compile_engine(model: ModelParams, precision: Precision, mode: CompileMode, *, device: Any,
                   profile: ProfileParams, out: str | Path) -> dict:
    """The `compile@<precision>` stage: the compiled engine of `model`'s decoder on `device`."""
    if device.type == "cpu" and precision != Precision.FP32:
        raise UserError(f"compile.precisions: {precision} needs a GPU (the compute device here is the CPU, where "
                        "half-precision convolutions are about 170x slower than fp32); use [fp32] on a CPU")
    loaded = load_vae(model)
    shape = Shape(channels=loaded.latent_channels, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    return build_package(fold_decoder(loaded.vae), shape, precision=precision, mode=mode, device=device,
                         profile=profile, path=out, model=loaded.description)
