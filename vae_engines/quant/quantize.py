"""One INT8 variant: calibrate its ranges, write them, and write its Q/DQ ONNX."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vae_engines.quant.calibrators import calibrate_amax
from vae_engines.core.errors import UserError
from vae_engines.model.export import load_onnx
from vae_engines.core.fileio import read_json, sha256_file, write_json
from vae_engines.data.latents import read_latent_set
from vae_engines.quant.qdq import qdq_onnx_from_onnx, quantizable_layers, select_layers
from vae_engines.quant.trt_cache import ranges_from_trt_cache

log = logging.getLogger(__name__)


def quantize_variant(name: str, variant: Any, fp32_onnx: str | Path, calibration_dir: str | Path,
                     out_onnx: str | Path, ranges_json: str | Path, threads: int | None = None,
                     fp16_onnx: str | Path | None = None) -> dict:
    """Calibrate `variant` (config.Int8Variant) on the latents in `calibration_dir` and
    write the ranges JSON and the Q/DQ model. An `auto` variant (target_psnr_db set) also
    chooses which layers to keep in float, against fp32 or `fp16_onnx`. Returns the ranges
    document."""
    model = load_onnx(fp32_onnx)
    layers = quantizable_layers(model)
    selected = select_layers(layers, keep_first=variant.keep_first, keep_last=variant.keep_last,
                             exclude_nodes=variant.exclude_nodes, exclude_op_types=variant.exclude_op_types)
    del model
    latents = read_latent_set(calibration_dir)
    if variant.max_latents:
        latents = latents[: variant.max_latents]
    tensors = list(dict.fromkeys(layer.activation for layer in selected))
    if variant.calibrator == "trt_cache":
        amax = ranges_from_trt_cache(variant.cache, tensors)
    else:
        amax = calibrate_amax(fp32_onnx, tensors, (x[None] for x in latents), calibrator=variant.calibrator,
                              num_bins=variant.num_bins, percentile=variant.percentile, threads=threads)
    auto = None
    if variant.target_psnr_db is not None:
        from vae_engines.quant.sensitivity import auto_keep, reference_decode

        if variant.target_reference == "fp16" and fp16_onnx is None:
            raise UserError(f"{name}: target_reference fp16 needs the fp16 ONNX; pass --fp16 (dvc.yaml does)")
        reference_path = fp32_onnx if variant.target_reference == "fp32" else fp16_onnx
        chosen_on = latents[: variant.auto_latents]
        reference = reference_decode(reference_path, chosen_on, threads)
        auto = auto_keep(load_onnx(fp32_onnx), selected, amax, chosen_on, reference, variant.target_psnr_db, threads)
        auto["reference"] = variant.target_reference
        auto["measured_on"] = f"{len(chosen_on)} calibration latents"
        selected = [layer for layer in selected if layer.name not in auto["kept_in_float"]]
    manifest = read_json(Path(calibration_dir) / "manifest.json")
    selected_names = {layer.name for layer in selected}
    doc = {
        "variant": name,
        "calibrator": variant.calibrator,
        "cache": variant.cache,
        "percentile": variant.percentile,
        "num_bins": variant.num_bins,
        "calibration": {"latents": int(len(latents)), "frames": int(latents.shape[-1]),
                        "source": manifest.get("source"), "sha256": manifest.get("sha256", {}).get("latents.npy")},
        "fp32_onnx_sha256": sha256_file(fp32_onnx),
        "amax": {t: float(f"{v:.7g}") for t, v in amax.items()},
        "layers": [{"name": layer.name, "op_type": layer.op_type, "input": layer.activation,
                    "int8": layer.name in selected_names} for layer in layers],
        "kept_in_float": [layer.name for layer in layers if layer.name not in selected_names],
        "auto": auto,
    }
    write_json(ranges_json, doc)
    qdq_onnx_from_onnx(fp32_onnx, out_onnx, doc["amax"], selected)
    log.info("%s: %d of %d convolution layers in int8 (%s)", name, len(selected), len(layers), variant.calibrator)
    return doc
