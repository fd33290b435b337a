"""Per-tensor activation ranges (amax) from calibration latents, with bounded memory.

ONNX Runtime's histogram collectors do the statistics (entropy, percentile); minmax and
mse are written here in the same collect / compute shape. What this module adds over
ORT's `create_calibrator`:

- Bounded memory. ORT's calibraters make every calibrated tensor a graph output and keep
  them for all batches before building histograms; one 1500-frame activation of the
  full-size decoder is over a GB and the decoder has ~37 conv inputs. Here the tensors
  are split into groups whose bytes fit `memory_budget_bytes`, each latent is run once
  per group with only that group fetched, and every batch is folded into the histograms
  and dropped at once.
- A working entropy calibrator. ORT's defaults (128 bins, 128 quantized bins) leave the
  KL search a single candidate, the full range, so "entropy" silently equals minmax.
  `num_bins` defaults to 2048 here, as TensorRT's own entropy calibrator uses.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 3 << 30
INT8_MAX = 127


class MinMaxCollector:
    """Largest |x| seen: the range that never clips, and that one transient can stretch."""

    def __init__(self) -> None:
        self.amax: dict[str, float] = {}

    def collect(self, name_to_arr: dict[str, np.ndarray]) -> None:
        for name, arr in name_to_arr.items():
            self.amax[name] = max(self.amax.get(name, 0.0), float(np.abs(arr).max()))

    def compute_amax(self) -> dict[str, float]:
        return dict(self.amax)


class OrtHistogramCollector:
    """ORT's HistogramCollector (entropy or percentile), symmetric, with its prints muted."""

    def __init__(self, method: str, num_bins: int, percentile: float | None = None) -> None:
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.collector = HistogramCollector(method=method, symmetric=True, num_bins=num_bins,
                                            num_quantized_bins=128, percentile=percentile or 99.999,
                                            scenario="same")

    def collect(self, name_to_arr: dict[str, np.ndarray]) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.collector.collect({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in name_to_arr.items()})

    def compute_amax(self) -> dict[str, float]:
        with contextlib.redirect_stdout(io.StringIO()):
            result = self.collector.compute_collection_result()
        return {name: float(max(abs(r[0]), abs(r[1]))) for name, r in result.items()}


class MseCollector(OrtHistogramCollector):
    """The symmetric range that minimises the expected int8 quantization error.

    Collects ORT's histogram of |x|; for each candidate amax (a bin edge) the error is the
    rounding noise step^2/12 of the values inside plus the squared clipping distance of
    the values outside, step = amax / 127. Suffix sums make it one vectorised pass.
    """

    def __init__(self, num_bins: int) -> None:
        super().__init__("percentile", num_bins)  # "percentile" + symmetric = |x| histogram

    def compute_amax(self) -> dict[str, float]:
        out = {}
        for name, (hist, edges, *_rest) in self.collector.get_histogram_dict().items():
            out[name] = mse_optimal_amax(np.asarray(hist, dtype=np.float64), np.asarray(edges, dtype=np.float64))
        return out


def mse_optimal_amax(hist: np.ndarray, edges: np.ndarray) -> float:
    """argmin over bin edges of: sum_in h*step^2/12 + sum_out h*(c - amax)^2."""
    centers = 0.5 * (edges[:-1] + edges[1:])
    candidates = edges[1:]
    # suffix sums over bins i >= j+1 (bins entirely above candidate j)
    s0 = np.concatenate([np.cumsum(hist[::-1])[::-1][1:], [0.0]])
    s1 = np.concatenate([np.cumsum((hist * centers)[::-1])[::-1][1:], [0.0]])
    s2 = np.concatenate([np.cumsum((hist * centers**2)[::-1])[::-1][1:], [0.0]])
    clip = s2 - 2 * candidates * s1 + candidates**2 * s0
    inside = hist.sum() - s0
    rounding = inside * (candidates / INT8_MAX) ** 2 / 12.0
    return float(candidates[int(np.argmin(clip + rounding))])


def make_collector(calibrator: str, num_bins: int, percentile: float | None) -> Any:
    """The one factory: a collector with collect(name_to_arr) and compute_amax()."""
    if calibrator == "minmax":
        return MinMaxCollector()
    if calibrator == "entropy":
        return OrtHistogramCollector("entropy", num_bins)
    if calibrator == "percentile":
        return OrtHistogramCollector("percentile", num_bins, percentile)
    if calibrator == "mse":
        return MseCollector(num_bins)
    raise ValueError(f"unknown calibrator {calibrator!r}")  # config validation makes this unreachable


def _tensor_bytes(model: Any, tensors: Sequence[str], batch: int, frames: int) -> dict[str, int]:
    """Bytes of each tensor at a concrete input shape, from ONNX shape inference."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.initializer[:]  # shapes only; keeps inference cheap on a 338 MB model
    for init in model.graph.initializer:
        probe.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    dims = probe.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[2].dim_value = batch, frames
    inferred = onnx.shape_inference.infer_shapes(probe)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in inferred.graph.value_info}
    shapes[model.graph.input[0].name] = [batch, dims[1].dim_value, frames]
    out = {}
    for t in tensors:
        shape = shapes.get(t)
        out[t] = 4 * int(np.prod(shape)) if shape and all(d > 0 for d in shape) else 1 << 30
    return out


def group_by_budget(sizes: dict[str, int], budget: int) -> list[list[str]]:
    """Consecutive groups of tensors, each under `budget` bytes (a lone larger one alone)."""
    groups: list[list[str]] = []
    current: list[str] = []
    total = 0
    for name, size in sizes.items():
        if current and total + size > budget:
            groups.append(current)
            current, total = [], 0
        current.append(name)
        total += size
    if current:
        groups.append(current)
    return groups


def calibrate_amax(onnx_path: str | Path, tensors: Sequence[str], latents: Iterable[np.ndarray], *,
                   calibrator: str, num_bins: int = 2048, percentile: float | None = None,
                   memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET, threads: int | None = None,
                   progress: Any = None) -> dict[str, float]:
    """amax per tensor of `tensors` in the float model at `onnx_path`, over `latents`.

    latents: arrays [1, C, T] (one decoder call each). memory_budget_bytes bounds the
    fetched activations of one call. progress: optional callable(done, total).
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    latents = list(latents)
    input_name = model.graph.input[0].name
    sizes = _tensor_bytes(model, tensors, batch=1, frames=max(x.shape[-1] for x in latents))
    groups = group_by_budget(sizes, memory_budget_bytes)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep tensor names
    # The arena keeps every buffer it ever grew to; at 1500 frames one activation of the
    # full-size decoder is 1.5 GB, so return freed buffers to the system instead.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads = threads
    collector = make_collector(calibrator, num_bins, percentile)
    log.info("calibrating %d tensors (%s) on %d latents in %d pass(es)", len(tensors), calibrator,
             len(latents), len(groups))
    total, done = len(groups) * len(latents), 0
    for group in groups:
        # One session per group, with only that group as extra graph outputs: ORT keeps every
        # graph output alive for the whole run, fetched or not, so one session exposing all
        # tensors would hold every activation at once (~25 GB at 1500 frames, full size).
        augmented = onnx.ModelProto()
        augmented.CopyFrom(model)
        existing = {o.name for o in augmented.graph.output}
        augmented.graph.output.extend(onnx.ValueInfoProto(name=t) for t in group if t not in existing)
        session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
        del augmented
        for latent in latents:
            fetched = session.run(group, {input_name: latent.astype(np.float32, copy=False)})
            collector.collect(dict(zip(group, fetched)))
            del fetched
            done += 1
            if progress:
                progress(done, total)
        del session
    del model
    amax = collector.compute_amax()
    for name, value in amax.items():
        if not np.isfinite(value) or value <= 0:
            # a dead activation (all zeros) still needs a valid scale
            amax[name] = 1e-8 if np.isfinite(value) else value
    return {t: amax[t] for t in tensors}
