"""Per-tensor ranges (amax) from collected activation statistics: one function per method.

Every calibrator reads the same statistics (quant.stats: amax and a 2048-bin histogram of
|x| over [0, amax]); none runs the model. `range_search` (quant.search) is the one that
does, on top of these.

- minmax: the largest |x|: never clips, and one transient stretches it.
- entropy: TensorRT's entropy calibration (IInt8EntropyCalibrator2), as NVIDIA describes
  it (GTC 2017, "8-bit Inference with TensorRT") and as NVIDIA's open implementation
  (pytorch-quantization / ModelOpt `_compute_amax_entropy`) computes it: on the |x|
  histogram with the zero bin replaced by its neighbour, for each candidate i from 128
  bins to all of them, P = the first i bins with the clipped tail added to bin i-1, Q =
  those i bins merged into 128 levels and spread back over the non-empty bins of each
  level; the threshold is the upper edge of bin i at the last minimum of KL(P || Q).
  ONNX Runtime's entropy calibrator is not this: it uses a signed histogram and 128 levels
  over [-t, t] (about 7 bits), and at its defaults has a single candidate.
- percentile: the bin edge where the |x| distribution reaches `percentile` percent (the
  lower edge of that bin, as pytorch-quantization and ONNX Runtime both return).
- mse: the bin edge minimising the expected squared int8 error: rounding noise step^2/12
  for values inside the range plus the squared clipping distance of values outside.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vae_engines.core.choices import Calibrator
from vae_engines.quant.stats import ActivationStats

INT8_LEVELS = 128  # magnitudes of symmetric int8
START_BIN = 128
DEAD_AMAX = 1e-8  # a tensor that is all zeros still needs a positive scale


def minmax_amax(hist: np.ndarray, edges: np.ndarray) -> float:
    return float(edges[-1])


def percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    cdf = np.cumsum(hist / hist.sum())
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return float(edges[min(index, len(edges) - 1)])


def mse_amax(hist: np.ndarray, edges: np.ndarray) -> float:
    """argmin over upper bin edges of sum_in h * step^2 / 12 + sum_out h * (c - amax)^2."""
    hist = hist.astype(np.float64)
    centers = 0.5 * (edges[:-1] + edges[1:])
    candidates = edges[1:]
    # suffix sums over the bins above candidate j (bins j+1 ...)
    s0 = np.concatenate([np.cumsum(hist[::-1])[::-1][1:], [0.0]])
    s1 = np.concatenate([np.cumsum((hist * centers)[::-1])[::-1][1:], [0.0]])
    s2 = np.concatenate([np.cumsum((hist * centers**2)[::-1])[::-1][1:], [0.0]])
    clip = s2 - 2 * candidates * s1 + candidates**2 * s0
    inside = hist.sum() - s0
    rounding = inside * (candidates / (INT8_LEVELS - 1)) ** 2 / 12.0
    return float(candidates[int(np.argmin(clip + rounding))])


def entropy_divergences(hist: np.ndarray, start_bin: int = START_BIN) -> tuple[np.ndarray, np.ndarray]:
    """(candidate bin counts i, KL(P_i || Q_i)) of TensorRT's entropy calibration (see the
    module docstring). inf where P has mass in a bin that Q leaves empty."""
    bins = hist.astype(np.float64).copy()
    bins[0] = bins[1]  # the zero bin (ReLU / padding zeros) would dominate P
    n = len(bins)
    mass = np.concatenate([[0.0], np.cumsum(bins)])  # mass[k] = sum(bins[:k])
    filled = np.concatenate([[0], np.cumsum(bins != 0)])  # non-empty bins among the first k
    candidates = np.arange(start_bin, n + 1)
    divergences = np.empty(len(candidates))
    for c, i in enumerate(candidates):
        p = bins[:i].copy()
        p[i - 1] += mass[n] - mass[i]  # outliers are clipped into the last kept bin
        # level L covers bins [ceil(L*i/128), ceil((L+1)*i/128)): floor(128 * j / i) == L
        starts = (np.arange(INT8_LEVELS + 1) * i + INT8_LEVELS - 1) // INT8_LEVELS
        level_mass = mass[starts[1:]] - mass[starts[:-1]]
        level_filled = filled[starts[1:]] - filled[starts[:-1]]
        per_bin = np.divide(level_mass, level_filled, out=np.zeros(INT8_LEVELS), where=level_filled > 0)
        level = (np.arange(i) * INT8_LEVELS) // i
        q = np.where(bins[:i] != 0, per_bin[level], 0.0)
        p_sum, q_sum = p.sum(), q.sum()
        if p_sum == 0 or q_sum == 0:
            divergences[c] = np.inf
            continue
        p, q = p / p_sum, q / q_sum
        support = p > 0
        if np.any(q[support] == 0):
            divergences[c] = np.inf
            continue
        divergences[c] = float(np.sum(p[support] * np.log(p[support] / q[support])))
    return candidates, divergences


def entropy_amax(hist: np.ndarray, edges: np.ndarray, start_bin: int = START_BIN) -> float:
    """TensorRT's entropy threshold: the upper edge of the last candidate of least KL."""
    if len(hist) <= start_bin:
        return float(edges[-1])
    candidates, divergences = entropy_divergences(hist, start_bin)
    best = len(divergences) - 1 - int(np.argmin(divergences[::-1]))  # the last minimum
    return float(edges[candidates[best]])


# The one table of histogram calibrators: core.choices.Calibrator names them, each takes
# (counts, bin edges, percentile) and returns the range.
CALIBRATORS: dict[Calibrator, Callable[[np.ndarray, np.ndarray, float], float]] = {
    Calibrator.MINMAX: lambda hist, edges, percentile: minmax_amax(hist, edges),
    Calibrator.ENTROPY: lambda hist, edges, percentile: entropy_amax(hist, edges),
    Calibrator.PERCENTILE: percentile_amax,
    Calibrator.MSE: lambda hist, edges, percentile: mse_amax(hist, edges),
}
DEFAULT_PERCENTILE = 99.99


def amax_from_histogram(calibrator: Calibrator | str, hist: np.ndarray, edges: np.ndarray,
                        percentile: float | None = None) -> float:
    """One tensor's range by a histogram calibrator (CALIBRATORS)."""
    if hist.sum() == 0 or edges[-1] <= 0:
        return DEAD_AMAX
    value = CALIBRATORS[Calibrator(calibrator)](hist, edges, DEFAULT_PERCENTILE if percentile is None else percentile)
    return value if value > 0 else float(edges[1])


def calibrate(stats: ActivationStats, tensors: list[str], calibrator: Calibrator | str,
              percentile: float | None = None) -> dict[str, float]:
    """amax of each of `tensors` from collected statistics (minmax reads only the maxima:
    statistics derived without histograms, quant.equalize's, serve it too)."""
    if Calibrator(calibrator) == Calibrator.MINMAX:  # what minmax_amax returns: the histogram's top edge
        return {t: stats.max_of(t) if stats.max_of(t) > 0 else DEAD_AMAX for t in tensors}
    return {t: amax_from_histogram(calibrator, *stats.of(t), percentile=percentile) for t in tensors}
