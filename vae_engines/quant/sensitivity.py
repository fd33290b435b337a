"""Per-layer INT8 sensitivity and the greedy choice of layers to keep in float.

A layer's sensitivity is the quality of the model with that layer alone quantized (its
input and weights through Q/DQ, everything else float), measured with ONNX Runtime on the
CPU against a reference decode. `auto_keep` then keeps the most sensitive layers in float,
one at a time in ranking order, until the whole model verified end to end meets the
target. The ranking belongs to the weights it was measured on: a fixture's ranking is not
real ACE-Step weights' ranking.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.measure.metrics import peak_psnr, stft_distance
from vae_engines.quant.qdq import Layer, insert_qdq

log = logging.getLogger(__name__)


def decode_with(model: Any, latents: np.ndarray, threads: int | None = None) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in latents])


def quality(model: Any, latents: np.ndarray, reference: np.ndarray, threads: int | None = None) -> dict:
    out = decode_with(model, latents, threads)
    return {"peak_psnr_db": round(peak_psnr(reference, out), 3), "stft_distance": round(stft_distance(reference, out), 5)}


def layer_sensitivity(base: Any, layers: list[Layer], amax: dict[str, float], latents: np.ndarray,
                      reference: np.ndarray, threads: int | None = None, progress: Any = None) -> list[dict]:
    """Quality with each layer alone in INT8, in network order."""
    rows = []
    for index, layer in enumerate(layers):
        q = quality(insert_qdq(base, [layer], amax), latents, reference, threads)
        rows.append({"index": index, "layer": layer.name, "op_type": layer.op_type, **q})
        if progress:
            progress(index + 1, len(layers))
    return rows


def auto_keep(base: Any, layers: list[Layer], amax: dict[str, float], latents: np.ndarray, reference: np.ndarray,
              target_db: float, threads: int | None = None, ranking: list[dict] | None = None) -> dict:
    """Smallest greedy set of layers kept in float (most sensitive first) whose model meets
    `target_db` peak PSNR against `reference`, verified end to end after every addition.
    ranking: layer_sensitivity rows already measured on the same latents (else measured here)."""
    rows = ranking if ranking is not None else layer_sensitivity(base, layers, amax, latents, reference, threads)
    ranking = sorted(rows, key=lambda r: (r["peak_psnr_db"], -r["index"]))
    by_name = {layer.name: layer for layer in layers}
    kept: list[str] = []
    steps = []
    while True:
        chosen = [layer for layer in layers if layer.name not in kept]
        achieved = quality(insert_qdq(base, chosen, amax), latents, reference, threads)
        steps.append({"kept": list(kept), **achieved})
        log.info("auto: %d kept in float -> %.2f dB (target %.2f)", len(kept), achieved["peak_psnr_db"], target_db)
        if achieved["peak_psnr_db"] >= target_db or len(kept) == len(layers):
            break
        kept.append(ranking[len(kept)]["layer"])
    return {"target_peak_psnr_db": target_db, "kept_in_float": kept, "achieved": achieved, "steps": steps,
            "ranking": [r["layer"] for r in ranking], "quantized": [by_name[n].name for n in by_name if n not in kept]}


def reference_decode(onnx_path: str | Path, latents: np.ndarray, threads: int | None = None) -> np.ndarray:
    from vae_engines.model.export import load_onnx

    return decode_with(load_onnx(onnx_path), latents, threads)
