"""Per-layer INT8 sensitivity and the greedy choice of layers to keep in float.

A layer's sensitivity is the quality of the model with that layer alone in INT8 (its input
and weights through Q/DQ, everything else float), against a reference decode. The float
decode up to a layer does not depend on the layer, so it is computed once and only the rest
of the graph is decoded per layer (GraphExecutor.run_from). `auto_keep` then keeps the
most sensitive layers in float, one at a time in ranking order, until the whole model,
verified end to end, meets the target. A ranking belongs to the weights it was measured
on: a fixture's ranking is not real ACE-Step weights' ranking.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core import device as devices
from vae_engines.core.choices import Calibrator, QuantFormat
from vae_engines.core.env import fingerprint
from vae_engines.core.fileio import write_json
from vae_engines.data.latentset import read_latent_set
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import load_onnx
from vae_engines.metrics import peak_psnr
from vae_engines.quant.calibrators import calibrate
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import Layer, QdqPlan, quantizable_layers
from vae_engines.quant.stats import read_stats

log = logging.getLogger(__name__)


def psnr_of(out: Any, reference: np.ndarray) -> float:
    """Peak PSNR (dB) of a decoded tensor against a numpy reference."""
    return round(peak_psnr(reference, out), 3)


def layer_sensitivity(executor: GraphExecutor, layers: list[Layer], amax: dict[str, float], latents: np.ndarray,
                      reference: np.ndarray, progress: Any = None, fmt: QuantFormat = QuantFormat.INT8) -> list[dict]:
    """Quality with each layer alone in INT8 (or `fmt`), in network order (rows with index, layer,
    op_type, peak_psnr_db)."""
    fake = FakeQuant(executor, layers, fmt)
    rows = []
    state, position = executor.feed(latents), 0
    for index, layer in enumerate(layers):
        node = executor.by_name[layer.node].index
        state = executor.run_from(state, position, node)  # float prefix, shared by the layers after it
        position = node
        out = executor.run_from(state, node, **fake.overrides({layer.name: amax[layer.activation]}))
        rows.append({"index": index, "layer": layer.name, "op_type": layer.op_type,
                     "peak_psnr_db": psnr_of(out[executor.output_name], reference)})
        if progress:
            progress(index + 1, len(layers))
    return rows


def without(plan: QdqPlan, kept: list[str]) -> QdqPlan:
    """`plan` with the layers named in `kept` (and their residual skips) left in float."""
    return QdqPlan([l for l in plan.layers if l.name not in kept], [l for l in plan.skips if l.name not in kept])


def auto_keep(executor: GraphExecutor, plan: QdqPlan, amax: dict[str, float], latents: np.ndarray,
              reference: np.ndarray, target_db: float, fmt: QuantFormat = QuantFormat.INT8) -> dict:
    """Smallest greedy set of layers kept in float (most sensitive first) whose model meets
    `target_db` peak PSNR against `reference`, verified end to end after every addition."""
    rows = layer_sensitivity(executor, plan.layers, amax, latents, reference, fmt=fmt)
    order = sorted(rows, key=lambda r: (r["peak_psnr_db"], -r["index"]))
    fake = FakeQuant(executor, plan.layers, fmt)
    kept: list[str] = []
    steps = []
    while True:
        achieved = psnr_of(executor.run(latents, **fake.plan_overrides(without(plan, kept), amax)), reference)
        steps.append({"kept": list(kept), "peak_psnr_db": achieved})
        log.info("auto: %d kept in float -> %.2f dB (target %.2f)", len(kept), achieved, target_db)
        if achieved >= target_db or len(kept) == len(plan.layers):
            break
        kept.append(order[len(kept)]["layer"])
    return {"target_peak_psnr_db": target_db, "kept_in_float": kept, "achieved_peak_psnr_db": achieved,
            "steps": steps, "ranking": [r["layer"] for r in order]}


def sensitivity_stage(calibrator: Calibrator, max_latents: int, *, fp32_onnx: str | Path, stats_npz: str | Path,
                      holdout_dir: str | Path, out_json: str | Path, plot_json: str | Path, device: Any) -> None:
    """The `sensitivity` stage: each layer alone in INT8 on held-out latents (report chart)."""
    model = load_onnx(fp32_onnx)
    layers = quantizable_layers(model)
    amax = calibrate(read_stats(stats_npz), [layer.activation for layer in layers], calibrator)
    executor = GraphExecutor(model, device)
    held = read_latent_set(holdout_dir)[:max_latents]
    rows = layer_sensitivity(executor, layers, amax, held, executor.decode(held))
    write_json(out_json, {
        "calibrator": str(calibrator),
        "latents": int(len(held)),
        "layers": rows,
        "most_sensitive": [r["layer"] for r in sorted(rows, key=lambda r: r["peak_psnr_db"])[:5]],
        "compute": {**executor.describe(), **devices.describe(device)},
        "machine": fingerprint(),
    })
    write_json(plot_json, [{"layer": f"{r['index']:02d} {r['layer']}", "peak_psnr_db": r["peak_psnr_db"]}
                           for r in rows])
