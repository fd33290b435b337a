"""Quality of each variant against fp32 and fp16 references decoded once.

Held-out latents and the wav round-trip (held-out audio -> encoder -> decoder) are
reported separately: the round-trip includes the encoder's error, which hides decoder
differences. The fp16 reference is the fp16 graph computed in fp16 (real on a GPU,
emulated per op on the CPU), so "vs fp16" means what it says. A variant's own outputs
come from its TensorRT engine where one can run here, else from its ONNX graph in the
PyTorch graph executor, in the graph's own types; provenance says which.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core.device import batch_size
from vae_engines.core.env import fingerprint
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import atomic_path, read_json, write_json
from vae_engines.core.lazy import lazy_import
from vae_engines.data.audio import write_wav
from vae_engines.data.latentset import has_array, read_latent_set, read_manifest
from vae_engines.graph.io import file_metadata, latent_range, model_facts, variant_recipe
from vae_engines.metrics import all_metrics, crest_factor_db
from vae_engines.runtime.base import Decoder
from vae_engines.runtime.onnx import GraphDecoder
from vae_engines.runtime.tensorrt import PlanDecoder
from vae_engines.trt.plan import not_measured

torch = lazy_import("torch")
log = logging.getLogger(__name__)


def check_finite(audio: Any, variant: str, runtime: str) -> Any:
    """NaN or Inf in an output is a failure that names the variant, never a silent nan metric."""
    finite = torch.isfinite(audio)
    if not bool(finite.all()):
        raise UserError(f"variant {variant} produced {int((~finite).sum())} NaN/Inf samples on {runtime}; its ranges "
                        "or fp16 overflow break it: keep more layers in float or use another calibrator")
    return audio


def batches(count: int, frames: int, decoder: Decoder) -> list[slice]:
    """Consecutive slices of `count` latents, each decoded in one call: on a GPU as many as
    fit batch_frames(frames) and the engine's batch range; on a CPU one (batching there
    made the embedded default's evaluate stage slower, 9.6 -> 11-13 s: larger tensors, the
    same arithmetic)."""
    size = batch_size(frames, decoder.device)
    if decoder.shape.batch is not None:
        size = max(1, min(size, decoder.shape.batch[1]))
    return [slice(i, i + size) for i in range(0, count, size)]


def decode_all(decoder: Decoder, latents: np.ndarray, variant: str) -> Any:
    """Decode latents [N, C, T] on the decoder's device, several per call on a GPU (batches);
    a tensor there. NaN / Inf is an error naming the variant."""
    parts = batches(len(latents), latents.shape[-1], decoder)
    return torch.cat([check_finite(decoder.decode(latents[part]), variant, decoder.kind) for part in parts])


def reference_outputs(fp32_onnx: str | Path, fp16_onnx: str | Path, holdout_dir: str | Path, out_dir: str | Path,
                      device: Any) -> None:
    """The `reference` stage: fp32 and fp16 decodes of the held-out and round-trip latents."""
    decoders = {"fp32": GraphDecoder(fp32_onnx, device), "fp16": GraphDecoder(fp16_onnx, device)}
    sets = {"heldout": read_latent_set(holdout_dir)}
    if has_array(holdout_dir, "audio_latents"):
        sets["roundtrip"] = read_latent_set(holdout_dir, "audio_latents")
    with atomic_path(out_dir, is_dir=True) as tmp:
        for set_name, latents in sets.items():
            for precision, decoder in decoders.items():
                np.save(Path(tmp) / f"{set_name}_{precision}.npy", decode_all(decoder, latents, precision).cpu().numpy())
        write_json(Path(tmp) / "runtimes.json", {name: d.describe() for name, d in decoders.items()})


def variant_decoder(plan: str | Path, onnx_path: str | Path, device: Any) -> tuple[Decoder, str]:
    """(decoder, TensorRT status): the plan where it can run here, else its graph in the
    PyTorch graph executor (in the graph's own types)."""
    status = not_measured(plan)
    if status is None:
        return PlanDecoder(plan, on_range="off"), "measured"  # quality is measured on any held-out latent
    return GraphDecoder(onnx_path, device), status


def write_clips(clips_dir: str | Path, clip: dict[str, Any], variant: str, sr: int, samples: int) -> list[str]:
    """The first `samples` of each clip as wav, and the difference to fp32 amplified x10."""
    clip = {name: a[:, :samples].float().cpu().numpy() for name, a in clip.items()}
    with atomic_path(clips_dir, is_dir=True) as tmp:
        for name, audio in clip.items():
            write_wav(Path(tmp) / f"{name}.wav", audio, sr)
        write_wav(Path(tmp) / "difference_x10.wav", 10 * (clip[variant] - clip["reference_fp32"]), sr)
    return sorted([f"{n}.wav" for n in clip] + ["difference_x10.wav"])


def evaluate_variant(variant: str, runtime: Decoder, holdout_dir: str | Path, reference_dir: str | Path,
                     clips_dir: str | Path, sr: int, clip_seconds: float) -> tuple[dict, dict]:
    """(metrics, facts): metrics of `runtime`'s outputs against the references, computed on
    its device, and the crest factors that relate peak PSNR to SNR. Writes wav clips."""
    ref = Path(reference_dir)

    def load(name: str) -> Any:
        return torch.from_numpy(np.load(ref / f"{name}.npy")).to(runtime.device)

    held = decode_all(runtime, read_latent_set(holdout_dir), variant)
    fp32 = load("heldout_fp32")
    metrics: dict = {"heldout": {"vs_fp32": all_metrics(fp32, held)}}
    facts = {"crest_factor_db": {"heldout_fp32": round(crest_factor_db(fp32), 2)}}
    if variant != "fp16":
        metrics["heldout"]["vs_fp16"] = all_metrics(load("heldout_fp16"), held)
    clip = {"reference_fp32": fp32[0], variant: held[0]}
    if (ref / "roundtrip_fp32.npy").is_file():
        audio = torch.from_numpy(read_latent_set(holdout_dir, "audio")).to(runtime.device)
        rt = decode_all(runtime, read_latent_set(holdout_dir, "audio_latents"), variant)
        rt_fp32 = load("roundtrip_fp32")
        n = min(audio.shape[-1], rt.shape[-1])
        metrics["roundtrip"] = {"vs_audio": all_metrics(audio[..., :n], rt[..., :n]),
                                "vs_fp32": all_metrics(rt_fp32, rt)}
        facts["crest_factor_db"]["roundtrip_audio"] = round(crest_factor_db(audio), 2)
        clip = {"input_audio": audio[0, :, :n], "reference_fp32": rt_fp32[0], variant: rt[0]}
    files = write_clips(clips_dir, clip, variant, sr, int(clip_seconds * sr))
    facts["clips"] = {"from": "round-trip of held-out audio" if "input_audio" in clip else "held-out latent 0",
                      "files": files}
    return metrics, facts


def evaluate_stage(variant: str, *, onnx_path: str | Path, plan: str | Path, holdout_dir: str | Path,
                   reference_dir: str | Path, out_dir: str | Path,
                   clip_seconds: float, device: Any) -> None:
    """The `evaluate@<variant>` stage: quality.json (DVC metrics: numbers only) and
    quality.provenance.json (what made them) in `out_dir`, and the clips. The variant's
    recipe is read from its graph's own record."""
    recipe = variant_recipe(onnx_path) or {}
    decoder, status = variant_decoder(plan, onnx_path, device)
    if recipe.get("quantization") == "implicit" and status != "measured":
        raise UserError(f"{variant}: implicit INT8's precision is chosen per layer by TensorRT 10's builder, so only "
                        f"its engine can measure it, and here it cannot run ({status}); set quantization: explicit "
                        "or evaluate where TensorRT 10 runs the plan")
    _, sr = model_facts(onnx_path)
    out = Path(out_dir)
    metrics, facts = evaluate_variant(variant, decoder, holdout_dir, reference_dir, out / "clips", sr, clip_seconds)
    write_json(out / "quality.json", metrics)
    write_json(out / "quality.provenance.json", {
        "variant": variant,
        "precision": recipe.get("precision", "fp16"),
        "runtime": decoder.describe(),
        "tensorrt": status,
        "references": read_json(Path(reference_dir) / "runtimes.json"),
        **{k: recipe.get(k) for k in ("calibrator", "percentile", "placement", "quantization", "kept_in_float")},
        "input_range": latent_range(recipe),  # the calibrated latent range its engines guard (runtime.guard)
        "holdout_sha256": read_manifest(holdout_dir).get("sha256", {}).get("latents.npy"),
        **facts,
        "model": file_metadata(onnx_path).get("model", "unknown"),
        "machine": fingerprint(),
        "clip_seconds": clip_seconds,
    })
