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

from vae_engines.core.fileio import atomic_path, read_json, write_json
from vae_engines.data.audio import write_wav
from vae_engines.data.latentset import has_array, read_latent_set, read_manifest
from vae_engines.measure.metrics import all_metrics, crest_factor_db
from vae_engines.measure.runtimes import GraphRuntime, TensorRTRuntime, check_finite, tensorrt_status

log = logging.getLogger(__name__)


def decode_all(runtime: Any, latents: np.ndarray, variant: str) -> np.ndarray:
    """Decode latents [N, C, T] one call each; NaN / Inf is an error naming the variant."""
    return np.concatenate([check_finite(runtime.decode(x[None]), variant, runtime.name) for x in latents])


def reference_outputs(fp32_onnx: str | Path, fp16_onnx: str | Path, holdout_dir: str | Path, out_dir: str | Path,
                      device: Any) -> None:
    """The `reference` stage: fp32 and fp16 decodes of the held-out and round-trip latents."""
    runtimes = {"fp32": GraphRuntime(fp32_onnx, device), "fp16": GraphRuntime(fp16_onnx, device)}
    sets = {"heldout": read_latent_set(holdout_dir)}
    if has_array(holdout_dir, "audio_latents"):
        sets["roundtrip"] = read_latent_set(holdout_dir, "audio_latents")
    with atomic_path(out_dir, is_dir=True) as tmp:
        for set_name, latents in sets.items():
            for precision, runtime in runtimes.items():
                np.save(Path(tmp) / f"{set_name}_{precision}.npy", decode_all(runtime, latents, precision))
        write_json(Path(tmp) / "runtimes.json", {name: r.describe() for name, r in runtimes.items()})


def variant_runtime(backend_name: str, plan: str | Path, onnx_path: str | Path, device: Any) -> tuple[Any, str]:
    """(runtime, tensorrt status): the engine where it can run here, else the graph executor."""
    status = tensorrt_status(backend_name, plan)
    if status is None:
        return TensorRTRuntime(backend_name, plan), "measured"
    return GraphRuntime(onnx_path, device), status


def data_sources(calibration_dir: str | Path | None, holdout_dir: str | Path) -> dict:
    """Where the calibration and held-out data came from, and how they were kept apart."""
    out = {}
    for role, directory in (("calibration", calibration_dir), ("holdout", holdout_dir)):
        if directory is None:
            continue
        m = read_manifest(directory)
        out[role] = {"source": m.get("source"), "path": m.get("path"), "frames": m.get("frames"),
                     "count": m.get("count"), "files": sorted({w["file"] for w in m.get("windows", [])}),
                     "split": m.get("split", {}).get("rule"), "disjoint": m.get("split", {}).get("disjoint")}
        if "roundtrip" in m:
            out[role]["roundtrip_files"] = [c["file"] for c in m["roundtrip"]["clips"]]
    return out


def evaluate_variant(variant: str, runtime: Any, holdout_dir: str | Path, reference_dir: str | Path,
                     clips_dir: str | Path, sr: int, clip_seconds: float) -> tuple[dict, dict]:
    """(metrics, facts): metrics of `runtime`'s outputs against the references, and the
    crest factors that relate peak PSNR to SNR. Writes wav clips to listen to."""
    ref = Path(reference_dir)
    held = decode_all(runtime, read_latent_set(holdout_dir), variant)
    fp32 = np.load(ref / "heldout_fp32.npy")
    metrics: dict = {"heldout": {"vs_fp32": all_metrics(fp32, held)}}
    facts = {"crest_factor_db": {"heldout_fp32": round(crest_factor_db(fp32), 2)}}
    if variant != "fp16":
        metrics["heldout"]["vs_fp16"] = all_metrics(np.load(ref / "heldout_fp16.npy"), held)
    clip = {"reference_fp32": fp32[0], variant: held[0]}
    if (ref / "roundtrip_fp32.npy").is_file():
        audio = read_latent_set(holdout_dir, "audio")
        rt = decode_all(runtime, read_latent_set(holdout_dir, "audio_latents"), variant)
        rt_fp32 = np.load(ref / "roundtrip_fp32.npy")
        n = min(audio.shape[-1], rt.shape[-1])
        metrics["roundtrip"] = {"vs_audio": all_metrics(audio[..., :n], rt[..., :n]),
                                "vs_fp32": all_metrics(rt_fp32, rt)}
        facts["crest_factor_db"]["roundtrip_audio"] = round(crest_factor_db(audio), 2)
        clip = {"input_audio": audio[0, :, :n], "reference_fp32": rt_fp32[0], variant: rt[0]}
    samples = int(clip_seconds * sr)
    clip = {name: a[:, :samples] for name, a in clip.items()}
    with atomic_path(clips_dir, is_dir=True) as tmp:
        for name, audio in clip.items():
            write_wav(Path(tmp) / f"{name}.wav", audio, sr)
        write_wav(Path(tmp) / "difference_x10.wav", 10 * (clip[variant] - clip["reference_fp32"]), sr)
    facts["clips"] = {"from": "round-trip of held-out audio" if "input_audio" in clip else "held-out latent 0",
                      "files": sorted([f"{n}.wav" for n in clip] + ["difference_x10.wav"])}
    return metrics, facts


def evaluate_stage(variant: str, params: Any, *, onnx_path: str | Path, plan: str | Path, holdout_dir: str | Path,
                   calibration_dir: str | Path | None, reference_dir: str | Path, ranges: str | Path | None,
                   out_dir: str | Path) -> None:
    """The `evaluate_fp16` / `evaluate@<variant>` stage: quality.json (DVC metrics: numbers
    only) and quality.provenance.json (what made them) in `out_dir`, and the clips."""
    from vae_engines.core import device as devices
    from vae_engines.core.env import fingerprint
    from vae_engines.core.params import section_hash
    from vae_engines.graph.io import file_metadata, model_facts

    device = devices.resolve(params.compute.device, params.compute.threads)
    runtime, status = variant_runtime(params.build.backend, plan, onnx_path, device)
    _, sr = model_facts(onnx_path)
    out = Path(out_dir)
    metrics, facts = evaluate_variant(variant, runtime, holdout_dir, reference_dir, out / "clips", sr,
                                      params.evaluate.clip_seconds)
    recipe = params.int8.get(variant)
    doc = read_json(ranges) if ranges else {}
    write_json(out / "quality.json", metrics)
    write_json(out / "quality.provenance.json", {
        "variant": variant,
        "precision": "fp16" if recipe is None else f"int8+{recipe.float_type}",
        "runtime": runtime.describe(),
        "tensorrt": status,
        "references": read_json(Path(reference_dir) / "runtimes.json"),
        "kept_in_float": doc.get("kept_in_float"),
        "calibrator": doc.get("calibrator"),
        "search": doc.get("search"),
        "auto": doc.get("auto") and {k: v for k, v in doc["auto"].items() if k != "steps"},
        "data": data_sources(calibration_dir, holdout_dir),
        **facts,
        "model": file_metadata(onnx_path).get("model", "unknown"),
        "machine": fingerprint(),
        "params_hash": section_hash(params.model, params.holdout, recipe, params.evaluate, params.compute),
    })
