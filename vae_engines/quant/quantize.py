"""One INT8 variant: its ranges (from the shared statistics, a TensorRT cache, or range
search), its layers kept in float (keep / exclude, or auto), and its Q/DQ ONNX in the
variant's float type. The `quantize@<variant>` stage is this module's `quantize_variant`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core.errors import UserError
from vae_engines.core.fileio import sha256_file, write_json

log = logging.getLogger(__name__)


def qdq_graph(model: Any, layers: list, amax: dict[str, float], float_type: str, float32_io: bool = True) -> Any:
    """The Q/DQ graph of fp32 `model` in `float_type` (fp16: scales, Snake, biases and kept
    layers in fp16; fp32: as calibrated)."""
    from vae_engines.graph.float16 import float16_graph
    from vae_engines.quant.qdq import insert_qdq

    if float_type == "fp32":
        return insert_qdq(model, layers, amax)
    return float16_graph(insert_qdq(model, layers, amax, scale_type=np.float16), float32_io)


def _reference(model: Any, kind: str, latents: np.ndarray, device: Any) -> np.ndarray:
    """Decodes of `latents` by the fp32 graph, or by its fp16 graph computed in fp16."""
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.float16 import float16_graph

    graph = model if kind == "fp32" else float16_graph(model)
    return GraphExecutor(graph, device).decode(latents)


def quantize_variant(name: str, variant: Any, *, fp32_onnx: str | Path, stats_npz: str | Path,
                     calibration_dir: str | Path, out_onnx: str | Path, ranges_json: str | Path, device: str,
                     threads: int | None = None, float32_io: bool = True) -> dict:
    """Ranges, kept layers and the Q/DQ model of INT8 recipe `variant` (core.params.Int8Variant).
    Returns the ranges document written to `ranges_json`."""
    from vae_engines.core import device as devices
    from vae_engines.data.latentset import read_latent_set, set_digest
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx, save_onnx
    from vae_engines.quant.calibrators import calibrate
    from vae_engines.quant.qdq import quantizable_layers, select_layers
    from vae_engines.quant.stats import read_stats

    model = load_onnx(fp32_onnx)
    layers = quantizable_layers(model)
    selected = select_layers(layers, keep_first=variant.keep_first, keep_last=variant.keep_last,
                             exclude_nodes=variant.exclude_nodes, exclude_op_types=variant.exclude_op_types)
    stats = read_stats(stats_npz)
    tensors = [layer.activation for layer in layers]
    missing = [t for t in tensors if t not in stats.tensors]
    if missing:
        raise UserError(f"{stats_npz} has no statistics for {missing[0]}; it belongs to another export: run dvc repro")
    torch_device = devices.resolve(device, threads)
    executor = None
    search = auto = None
    if variant.calibrator == "trt_cache":
        from vae_engines.quant.trt_cache import ranges_from_trt_cache

        amax = ranges_from_trt_cache(variant.cache, tensors)
    elif variant.calibrator == "search":
        from vae_engines.quant.search import range_search

        latents = read_latent_set(calibration_dir)[: variant.search_latents]
        executor = GraphExecutor(model, torch_device)
        found, search = range_search(executor, selected, stats, latents, executor.decode(latents),
                                     sweeps=variant.search_sweeps)
        amax = {**calibrate(stats, tensors, "minmax"), **found}  # layers kept in float keep a valid range
    else:
        amax = calibrate(stats, tensors, variant.calibrator, variant.percentile)
    if variant.target_psnr_db is not None:
        from vae_engines.quant.sensitivity import auto_keep

        latents = read_latent_set(calibration_dir)[: variant.auto_latents]
        executor = executor or GraphExecutor(model, torch_device)
        reference = _reference(model, variant.target_reference, latents, torch_device)
        auto = auto_keep(executor, selected, amax, latents, reference, variant.target_psnr_db)
        auto["reference"] = variant.target_reference + (" computed in fp16" if variant.target_reference == "fp16"
                                                        else "")
        auto["measured_on"] = f"{len(latents)} calibration latents, fake-quantized fp32 graph"
        selected = [layer for layer in selected if layer.name not in auto["kept_in_float"]]
    selected_names = {layer.name for layer in selected}
    doc = {
        "variant": name,
        "calibrator": variant.calibrator,
        "percentile": variant.percentile,
        "cache": variant.cache,
        "float_type": variant.float_type,
        "statistics": {"file": str(stats_npz), "sha256": sha256_file(stats_npz)},
        "calibration_sha256": set_digest(calibration_dir),
        "fp32_onnx_sha256": sha256_file(fp32_onnx),
        "amax": {t: float(f"{amax[t]:.7g}") for t in tensors},
        "layers": [{"name": layer.name, "op_type": layer.op_type, "input": layer.activation,
                    "int8": layer.name in selected_names} for layer in layers],
        "kept_in_float": [layer.name for layer in layers if layer.name not in selected_names],
        "search": search,
        "auto": auto,
        "compute": devices.describe(torch_device) if executor is not None else None,
    }
    graph = qdq_graph(model, selected, doc["amax"], variant.float_type, float32_io)
    save_onnx(graph, out_onnx)
    write_json(ranges_json, doc)
    log.info("%s: %d of %d convolution layers in int8 (%s, rest %s)", name, len(selected), len(layers),
             variant.calibrator, variant.float_type)
    return doc
