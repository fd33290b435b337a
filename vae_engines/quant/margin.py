"""A margin on an INT8 variant's calibrated ranges, for the peaks its calibration latents did
not show (recipe key `range_margin`: a factor >= 1, or `auto`).

Why: a minmax range is the largest value the calibration latents produced, and latents the
engine meets later go further: on the embedded default, the held-out latents' maxima exceed
the calibration set's by up to 1.35x at some residual Adds, and what lies beyond a range is
clipped. Clipping costs this decoder more than rounding does (the percentile and mse
calibrators, which clip on purpose, score 41-47 dB held-out against minmax's 52), so a
slightly wider range than any calibration latent needed pays: minmax x 1.1 scored 54.8 dB
held-out, x 1.0 52.1, x 1.25 51.5 (ranges too coarse again). How wide is a property of the
data, so `auto` chooses it by cross-validation on the calibration latents alone: ranges
from one half, scored on the other half through the fake-quantized graph, both ways; the
factor of least squared error wins (ties: the smaller). The held-out latents never take part.
"""

from __future__ import annotations

import logging
import numpy as np

from vae_engines.core.choices import Calibrator
from vae_engines.core.errors import UserError
from vae_engines.graph.execute import GraphExecutor
from vae_engines.quant.calibrators import calibrate
from vae_engines.quant.crossval import halves, least_error
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import QdqPlan
from vae_engines.quant.stats import collect

log = logging.getLogger(__name__)

MARGINS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.3)  # `auto`'s candidates


def widened(amax: dict[str, float], margin: float) -> dict[str, float]:
    """Every range times `margin`."""
    return {tensor: value * margin for tensor, value in amax.items()}


def cross_validated_margin(executor: GraphExecutor, plan: QdqPlan, tensors: list[str], latents: np.ndarray,
                           calibrator: Calibrator, percentile: float | None,
                           candidates: tuple[float, ...] = MARGINS) -> tuple[float, dict[str, float]]:
    """(the chosen margin, the squared error of each candidate): ranges by `calibrator` from
    each half of `latents`, widened, scored on the other half against the fp32 decode. The
    calibrator is one of the statistics' (params.Int8Variant.validate refuses search and
    trt_cache with `auto`)."""
    if len(latents) < 2:
        raise UserError("range_margin: auto chooses the margin by cross-validation over the calibration latents, which "
                        "needs at least 2; raise calibration.count or give range_margin a number")
    parts = halves(latents)
    fake = FakeQuant(executor, plan.layers)
    totals = dict.fromkeys(candidates, 0.0)
    for fit, held in (parts, parts[::-1]):
        amax = calibrate(collect(executor, tensors, fit), tensors, calibrator, percentile)
        reference = executor.decode(held).astype(np.float64)
        for margin in candidates:
            decoded = executor.decode(held, **fake.plan_overrides(plan, widened(amax, margin)))
            totals[margin] += float(np.sum((decoded.astype(np.float64) - reference) ** 2))
    best, errors = least_error(candidates, totals.__getitem__)  # candidates ascend: a tie takes the smaller
    log.info("range margin: x%s (cross-validated squared error by margin: %s)", best, errors)
    return best, errors


def apply_margin(setting: float | str, amax: dict[str, float], executor: GraphExecutor, plan: QdqPlan,
                 tensors: list[str], latents: np.ndarray, calibrator: Calibrator,
                 percentile: float | None) -> tuple[dict[str, float], dict]:
    """The ranges widened by the recipe's `range_margin` (a factor, or `auto`: chosen on the
    calibration `latents`), and the record of it."""
    if setting == "auto":
        margin, errors = cross_validated_margin(executor, plan, tensors, latents, calibrator, percentile)
        return widened(amax, margin), {"margin": margin, "chosen": "cross-validation on the calibration latents' halves",
                                       "cross_validated_error": errors}
    return widened(amax, float(setting)), {"margin": float(setting), "chosen": "range_margin"}
