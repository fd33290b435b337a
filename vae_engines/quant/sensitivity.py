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
from typing import Any

import numpy as np

from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import Layer

log = logging.getLogger(__name__)


def psnr_of(out: Any, reference: np.ndarray) -> float:
    """Peak PSNR (dB) of a decoded tensor against a numpy reference."""
    from vae_engines.measure.metrics import peak_psnr

    return round(peak_psnr(reference, out.float().cpu().numpy()), 3)


def layer_sensitivity(executor: Any, layers: list[Layer], amax: dict[str, float], latents: np.ndarray,
                      reference: np.ndarray, progress: Any = None) -> list[dict]:
    """Quality with each layer alone in INT8, in network order (rows with index, layer, op_type, peak_psnr_db)."""
    fake = FakeQuant(executor, layers)
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


def auto_keep(executor: Any, layers: list[Layer], amax: dict[str, float], latents: np.ndarray,
              reference: np.ndarray, target_db: float, ranking: list[dict] | None = None) -> dict:
    """Smallest greedy set of layers kept in float (most sensitive first) whose model meets
    `target_db` peak PSNR against `reference`, verified end to end after every addition.
    ranking: layer_sensitivity rows already measured on the same latents (else measured here)."""
    rows = ranking if ranking is not None else layer_sensitivity(executor, layers, amax, latents, reference)
    order = sorted(rows, key=lambda r: (r["peak_psnr_db"], -r["index"]))
    fake = FakeQuant(executor, layers)
    kept: list[str] = []
    steps = []
    while True:
        chosen = {layer.name: amax[layer.activation] for layer in layers if layer.name not in kept}
        achieved = psnr_of(executor.run(latents, **fake.overrides(chosen)), reference)
        steps.append({"kept": list(kept), "peak_psnr_db": achieved})
        log.info("auto: %d kept in float -> %.2f dB (target %.2f)", len(kept), achieved, target_db)
        if achieved >= target_db or len(kept) == len(layers):
            break
        kept.append(order[len(kept)]["layer"])
    return {"target_peak_psnr_db": target_db, "kept_in_float": kept, "achieved_peak_psnr_db": achieved,
            "steps": steps, "ranking": [r["layer"] for r in order]}


def sensitivity_stage(params: Any, *, fp32_onnx: str, stats_npz: str, holdout_dir: str, out_json: str,
                      plot_json: str) -> None:
    """The `sensitivity` stage: each layer alone in INT8 on held-out latents (report chart)."""
    from vae_engines.core import device as devices
    from vae_engines.core.env import fingerprint
    from vae_engines.core.fileio import write_json
    from vae_engines.core.params import section_hash
    from vae_engines.data.latentset import read_latent_set
    from vae_engines.graph.execute import GraphExecutor
    from vae_engines.graph.io import load_onnx
    from vae_engines.quant.calibrators import calibrate
    from vae_engines.quant.qdq import quantizable_layers
    from vae_engines.quant.stats import read_stats

    s = params.sensitivity
    device = devices.resolve(params.compute.device, params.compute.threads)
    model = load_onnx(fp32_onnx)
    layers = quantizable_layers(model)
    amax = calibrate(read_stats(stats_npz), [layer.activation for layer in layers], s.calibrator)
    executor = GraphExecutor(model, device)
    held = read_latent_set(holdout_dir)[: s.max_latents]
    rows = layer_sensitivity(executor, layers, amax, held, executor.decode(held))
    write_json(out_json, {
        "calibrator": s.calibrator,
        "latents": int(len(held)),
        "layers": rows,
        "most_sensitive": [r["layer"] for r in sorted(rows, key=lambda r: r["peak_psnr_db"])[:5]],
        "compute": {**executor.describe(), **devices.describe(device)},
        "machine": fingerprint(),
        "params_hash": section_hash(params.model, s, params.compute),
    })
    write_json(plot_json, [{"layer": f"{r['index']:02d} {r['layer']}", "peak_psnr_db": r["peak_psnr_db"]}
                           for r in rows])
