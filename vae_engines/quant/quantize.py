"""One INT8 (or FP8) variant: its layers and placement, its ranges, the layers auto keeps in
float, and its graph. The `quantize@<variant>` stage is `quantize_variant`.

The steps, each a function: `plan_of` (the selected layers through the placement's table,
quant.qdq.PLACEMENTS), `variant_ranges` (the calibrator's table, RANGES: the shared
statistics, range search, or a TensorRT cache), `auto_plan` (quant.sensitivity.auto_keep,
when the recipe has a target), `equalized_inputs` (quant.equalize, when the recipe
equalizes: the fp32 graph and its statistics with per-channel scales folded in, before
anything else reads them), `variant_graph` (explicit: the Q/DQ graph in the variant's
float type; implicit: the fp32 graph, whose ranges TensorRT 10 applies as dynamic ranges).
The record of what was decided -- calibrator, placement, ranges, layers kept in float --
goes into the ranges JSON and into the graph's own metadata (`vae_engines.recipe`), so the
build, the evaluation and the report read it from the variant they are given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core import device as devices
from vae_engines.core.choices import Calibrator, FloatType, QuantFormat, Quantization
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import sha256_file, write_json
from vae_engines.core.params import Int8Variant
from vae_engines.data.latentset import read_latent_set, set_digest
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.float16 import float16_graph
from vae_engines.graph.io import RECIPE_KEY, load_onnx, save_onnx, set_metadata
from vae_engines.quant.calibrators import calibrate
from vae_engines.quant.crossval import least_error
from vae_engines.quant.equalize import (MIGRATIONS, cross_validated_error, equalization_scales,
                                        equalized_channel_amax, equalized_graph, scale_groups, scales_record)
from vae_engines.quant.margin import apply_margin
from vae_engines.quant.qdq import PLACEMENTS, Layer, QdqPlan, insert_qdq, quantizable_layers, select_layers
from vae_engines.quant.search import range_search
from vae_engines.quant.sensitivity import auto_keep, without
from vae_engines.quant.stats import ActivationStats, collect, read_stats
from vae_engines.quant.trt_cache import ranges_from_trt_cache

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What every range source may read: the fp32 model, the statistics, the calibration
    latents, the device, and an executor of the model (made on first use: histogram
    calibrators never decode, and copying the weights to the device is not free)."""

    model: Any
    stats: ActivationStats
    calibration_dir: Path
    device: Any

    @cached_property
    def executor(self) -> GraphExecutor:
        return GraphExecutor(self.model, self.device)


def _statistics(recipe: Int8Variant, inputs: Inputs, plan: QdqPlan, tensors: list[str]) -> tuple[dict, None]:
    del plan
    missing = [t for t in tensors if t not in inputs.stats.tensors]
    if missing:  # implicit INT8 needs every tensor: collected here, for this variant only
        latents = read_latent_set(inputs.calibration_dir)
        extra = collect(inputs.executor, missing, latents)
        return {**calibrate(inputs.stats, [t for t in tensors if t in inputs.stats.tensors], recipe.calibrator,
                            recipe.percentile), **calibrate(extra, missing, recipe.calibrator, recipe.percentile)}, None
    return calibrate(inputs.stats, tensors, recipe.calibrator, recipe.percentile), None


def _search(recipe: Int8Variant, inputs: Inputs, plan: QdqPlan, tensors: list[str]) -> tuple[dict, dict]:
    latents = read_latent_set(inputs.calibration_dir)[: recipe.search_latents]
    found, record = range_search(inputs.executor, plan.layers, inputs.stats, latents,
                                 inputs.executor.decode(latents), sweeps=recipe.search_sweeps, fmt=recipe.format)
    return {**calibrate(inputs.stats, tensors, Calibrator.MINMAX), **found}, record


def _cache(recipe: Int8Variant, inputs: Inputs, plan: QdqPlan, tensors: list[str]) -> tuple[dict, None]:
    del inputs, plan
    return ranges_from_trt_cache(recipe.cache, tensors), None


# The one table of range sources: every Calibrator has its function.
RANGES: dict[Calibrator, Callable[[Int8Variant, Inputs, QdqPlan, list[str]], tuple[dict, dict | None]]] = {
    Calibrator.ENTROPY: _statistics,
    Calibrator.MINMAX: _statistics,
    Calibrator.PERCENTILE: _statistics,
    Calibrator.MSE: _statistics,
    Calibrator.SEARCH: _search,
    Calibrator.TRT_CACHE: _cache,
}


def activation_tensors(model: Any) -> list[str]:
    """Every float tensor a node of the graph makes, and the graph input, in graph order:
    the tensors implicit INT8 needs a dynamic range for."""
    return [model.graph.input[0].name] + [n.output[0] for n in model.graph.node if n.op_type != "Constant"]


def plan_of(recipe: Int8Variant, layers: list[Layer]) -> QdqPlan:
    """The layers the recipe quantizes, placed by its placement's rule."""
    selected = select_layers(layers, keep_first=recipe.keep_first, keep_last=recipe.keep_last,
                             exclude_nodes=recipe.exclude_nodes, exclude_op_types=recipe.exclude_op_types)
    return PLACEMENTS[recipe.placement](selected)


def auto_plan(recipe: Int8Variant, inputs: Inputs, plan: QdqPlan, amax: dict[str, float]) -> tuple[QdqPlan, dict]:
    """The plan with the fewest most-sensitive layers kept in float that meets the target."""
    latents = read_latent_set(inputs.calibration_dir)[: recipe.auto_latents]
    model = inputs.model if recipe.target_reference == "fp32" else float16_graph(inputs.model)
    reference = GraphExecutor(model, inputs.device).decode(latents)
    auto = auto_keep(inputs.executor, plan, amax, latents, reference, recipe.target_psnr_db, fmt=recipe.format)
    auto["reference"] = recipe.target_reference + (" computed in fp16" if recipe.target_reference == "fp16" else "")
    auto["measured_on"] = f"{len(latents)} calibration latents, fake-quantized fp32 graph"
    return without(plan, auto["kept_in_float"]), auto


def qdq_graph(model: Any, plan: QdqPlan | list[Layer], amax: dict[str, float], float_type: FloatType | str,
              float32_io: bool = True, fmt: QuantFormat = QuantFormat.INT8) -> Any:
    """The `fmt` Q/DQ graph of fp32 `model` in `float_type` (fp16: scales, Snake, biases and
    kept layers in fp16; fp32: as calibrated)."""
    if float_type == FloatType.FP32:
        return insert_qdq(model, plan, amax, fmt=fmt)
    return float16_graph(insert_qdq(model, plan, amax, scale_type=np.float16, fmt=fmt), float32_io)


def variant_graph(model: Any, recipe: Int8Variant, plan: QdqPlan, amax: dict[str, float], float32_io: bool) -> Any:
    """explicit: the Q/DQ graph in the variant's float type; implicit: the fp32 graph."""
    if recipe.quantization == Quantization.IMPLICIT:
        return model
    return qdq_graph(model, plan, amax, recipe.float_type, float32_io, recipe.format)


def equalized_inputs(recipe: Int8Variant, inputs: Inputs, plan: QdqPlan) -> tuple[Inputs, dict]:
    """The fp32 graph with the recipe's equalization folded in (quant.equalize) and the
    statistics of that graph: for minmax exactly the collected per-channel maxima / s (Snake
    is equivariant), for a histogram calibrator collected again on it. Returns the new
    Inputs and the record of what was folded."""
    groups = scale_groups(inputs.model)
    channels = inputs.stats.channels()
    migration, errors = recipe.equalize_migration, None
    if migration is None:
        latents = read_latent_set(inputs.calibration_dir)
        if len(latents) < 2:
            raise UserError("equalize chooses its migration by cross-validation over the calibration latents, which "
                            "needs at least 2; raise calibration.count or set equalize_migration")
        found = cross_validated_error(inputs.model, groups, plan, latents, inputs.device, fmt=recipe.format)
        migration, errors = least_error(MIGRATIONS, found.__getitem__)
    scales = equalization_scales(groups, channels, inputs.model, migration)
    model = equalized_graph(inputs.model, groups, scales)
    channel = equalized_channel_amax(groups, scales, channels)
    tensors = list(inputs.stats.tensors)
    if recipe.calibrator == Calibrator.MINMAX:
        stats = ActivationStats(tensors, np.array([channel[t].max() for t in tensors]), None,
                                [channel[t] for t in tensors])
    else:
        stats = collect(GraphExecutor(model, inputs.device), tensors, read_latent_set(inputs.calibration_dir))
    record = {"migration": migration, "cross_validated_error": errors, "groups": len(scales),
              "statistics": "derived (per-channel maxima / s)" if stats.hist is None else "collected again",
              "scales": scales_record(groups, scales)}
    log.info("equalization: migration %s over %d scale groups%s", migration, len(scales),
             "" if errors is None else f" (cross-validated squared error by migration: {errors})")
    return Inputs(model, stats, inputs.calibration_dir, inputs.device), record


def variant_record(name: str, recipe: Int8Variant, layers: list[Layer], plan: QdqPlan, amax: dict[str, float],
                   tensors: list[str]) -> dict:
    quantized = {l.name for l in plan.layers}
    return {
        "variant": name, "calibrator": str(recipe.calibrator), "percentile": recipe.percentile,
        "placement": str(recipe.placement), "quantization": str(recipe.quantization), "cache": recipe.cache,
        "float_type": str(recipe.float_type), "format": str(recipe.format),
        "precision": f"{recipe.format}+{recipe.float_type}",
        "amax": {t: float(f"{amax[t]:.7g}") for t in tensors},
        "layers": [{"name": l.name, "op_type": l.op_type, "input": l.activation, "int8": l.name in quantized,
                    "skip_quantized": any(s.name == l.name for s in plan.skips),
                    "skip": l.skip.tensor if l.skip is not None else None} for l in layers],
        "kept_in_float": [l.name for l in layers if l.name not in quantized],
        "kept_nodes": [l.node for l in layers if l.name not in quantized],
    }


def quantize_variant(name: str, recipe: Int8Variant, *, fp32_onnx: str | Path, stats_npz: str | Path,
                     calibration_dir: str | Path, out_onnx: str | Path, ranges_json: str | Path, device: Any,
                     float32_io: bool = True) -> dict:
    """Ranges, kept layers and the graph of INT8 recipe `recipe`; returns the record written
    to `ranges_json` (and into the graph's metadata)."""
    model = load_onnx(fp32_onnx)
    layers = quantizable_layers(model)
    plan = plan_of(recipe, layers)
    implicit = recipe.quantization == Quantization.IMPLICIT
    tensors = activation_tensors(model) if implicit else list(dict.fromkeys(
        [l.activation for l in layers] + plan.tensors()))
    inputs = Inputs(model, read_stats(stats_npz), Path(calibration_dir), device)
    missing = [l.activation for l in layers if l.activation not in inputs.stats.tensors]
    if missing:
        raise UserError(f"{stats_npz} has no statistics for {missing[0]}; it belongs to another export: run dvc repro")
    equalization = None
    if recipe.equalize:
        inputs, equalization = equalized_inputs(recipe, inputs, plan)
    amax, search = RANGES[recipe.calibrator](recipe, inputs, plan, tensors)
    margin = None
    if recipe.range_margin != 1.0:
        amax, margin = apply_margin(recipe.range_margin, amax, inputs.executor, plan, tensors,
                                    read_latent_set(inputs.calibration_dir), recipe.calibrator, recipe.percentile,
                                    fmt=recipe.format)
    auto = None
    if recipe.is_auto:
        plan, auto = auto_plan(recipe, inputs, plan, amax)
    record = {**variant_record(name, recipe, layers, plan, amax, tensors), "search": search, "auto": auto,
              **({"equalization": equalization} if equalization is not None else {}),
              **({"range_margin": margin} if margin is not None else {}),
              "statistics": {"file": str(stats_npz), "sha256": sha256_file(stats_npz)},
              "calibration_sha256": set_digest(calibration_dir), "fp32_onnx_sha256": sha256_file(fp32_onnx),
              "compute": devices.describe(device) if (search or auto) else None}
    recipe_meta = {k: v for k, v in record.items() if k not in ("search", "auto", "layers", "equalization",
                                                                   "range_margin")}
    if margin is not None:
        recipe_meta["range_margin"] = margin["margin"]
        if "latent_margin" in margin:
            recipe_meta["latent_range_margin"] = margin["latent_margin"]
    if equalization is not None:  # the scales stay in the ranges record; the graph already carries them folded
        recipe_meta["equalization"] = {"migration": equalization["migration"], "groups": equalization["groups"]}
    graph = set_metadata(variant_graph(inputs.model, recipe, plan, amax, float32_io), {RECIPE_KEY: json.dumps(
        recipe_meta, sort_keys=True)})
    save_onnx(graph, out_onnx)
    write_json(ranges_json, record)
    log.info("%s: %d of %d convolution layers in %s, %d residual skips (%s, %s, rest %s)", name, len(plan.layers),
             len(layers), recipe.format, len(plan.skips), recipe.calibrator, recipe.placement, recipe.float_type)
    return record
