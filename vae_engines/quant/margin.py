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

The graph's input, the latent, gets a margin of its own, chosen jointly with the one for every
other range: it is the one quantized tensor no layer of the decoder shapes (its tails are the
generator's), its clipping reaches every layer after it, and on the embedded default its
held-out values reach 12.9 against the calibration's 10.4. Measured there
(benchmarks/results/int8_55db.md): with the latent's range x1.3 to x2 instead of x1, each
candidate margin of the other ranges decodes the held-out latents 1.0-2.2 dB better, and the
joint choice (x1.1, latent x1.3) scores 55.3 dB against the single factor's 54.0.

Each candidate is scored on the held half's first SCORED_FRAMES frames (its ranges come from
all of the other half's): a full-size 60 s window costs a decode per candidate, and 18
candidate pairs over 1500-frame windows would make this the pipeline's longest stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vae_engines.core.choices import Calibrator, QuantFormat
from vae_engines.core.errors import UserError
from vae_engines.graph.execute import GraphExecutor
from vae_engines.quant.calibrators import calibrate
from vae_engines.quant.crossval import halves, least_error
from vae_engines.quant.fakequant import FakeQuant
from vae_engines.quant.qdq import QdqPlan
from vae_engines.quant.stats import collect

log = logging.getLogger(__name__)

MARGINS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.3)  # `auto`'s candidates for every range
INPUT_MARGINS = (1.0, 1.3, 2.0)  # and for the graph input's (the latent's), chosen together with them
SCORED_FRAMES = 256  # the frames of each held-out window a candidate is scored on


@dataclass(frozen=True)
class Margin:
    """Factors on calibrated ranges: `every` for each range, `latent` for the graph input's
    (None: the same as every other)."""

    every: float
    latent: float | None = None

    def widen(self, amax: dict[str, float], input_name: str) -> dict[str, float]:
        return {t: v * (self.latent if t == input_name and self.latent is not None else self.every)
                for t, v in amax.items()}

    def record(self) -> dict:
        return {"margin": self.every, **({"latent_margin": self.latent} if self.latent is not None else {})}


def widened(amax: dict[str, float], margin: float) -> dict[str, float]:
    """Every range times `margin`."""
    return Margin(margin).widen(amax, "")


def cross_validated_margin(executor: GraphExecutor, plan: QdqPlan, tensors: list[str], latents: np.ndarray,
                           calibrator: Calibrator, percentile: float | None,
                           candidates: tuple[float, ...] = MARGINS,
                           input_candidates: tuple[float, ...] = INPUT_MARGINS,
                           fmt: QuantFormat = QuantFormat.INT8) -> tuple[Margin, dict[str, dict]]:
    """(the chosen margins, the squared error of each candidate pair, by margin then latent
    margin): ranges by `calibrator` from each half of `latents`, widened, scored on the other
    half's first SCORED_FRAMES frames against the fp32 decode. The latent's own candidates
    apply where the plan quantizes it. The calibrator is one of the statistics'
    (params.Int8Variant.validate refuses search and trt_cache with `auto`)."""
    if len(latents) < 2:
        raise UserError("range_margin: auto chooses the margin by cross-validation over the calibration latents, which "
                        "needs at least 2; raise calibration.count or give range_margin a number")
    parts = halves(latents)
    fake = FakeQuant(executor, plan.layers, fmt=fmt)
    latent = executor.input_name if executor.input_name in plan.tensors() else None
    pairs = [Margin(m, l if latent else None) for m in candidates for l in (input_candidates if latent else (None,))]
    totals = dict.fromkeys(pairs, 0.0)
    for fit, held in (parts, parts[::-1]):
        amax = calibrate(collect(executor, tensors, fit), tensors, calibrator, percentile)
        scored = np.ascontiguousarray(held[..., :SCORED_FRAMES])
        reference = executor.decode(scored).astype(np.float64)
        for pair in pairs:
            decoded = executor.decode(scored, **fake.plan_overrides(plan, pair.widen(amax, executor.input_name)))
            totals[pair] += float(np.sum((decoded.astype(np.float64) - reference) ** 2))
    best, _ = least_error(tuple(pairs), totals.__getitem__)  # pairs ascend: a tie takes the smaller
    errors: dict[str, dict] = {}
    for pair, total in totals.items():
        errors.setdefault(str(pair.every), {})[str(pair.latent) if latent else "same"] = total
    log.info("range margin: x%s%s (cross-validated squared error by margin, then latent margin: %s)", best.every,
             f", latent x{best.latent}" if best.latent is not None else "", errors)
    return best, errors


def apply_margin(setting: float | str, amax: dict[str, float], executor: GraphExecutor, plan: QdqPlan,
                 tensors: list[str], latents: np.ndarray, calibrator: Calibrator,
                 percentile: float | None, fmt: QuantFormat = QuantFormat.INT8) -> tuple[dict[str, float], dict]:
    """The ranges widened by the recipe's `range_margin` (a factor, or `auto`: chosen on the
    calibration `latents`), and the record of it."""
    if setting == "auto":
        margin, errors = cross_validated_margin(executor, plan, tensors, latents, calibrator, percentile, fmt=fmt)
        return margin.widen(amax, executor.input_name), {
            **margin.record(), "chosen": "cross-validation on the calibration latents' halves",
            "cross_validated_error": errors}
    return widened(amax, float(setting)), {"margin": float(setting), "chosen": "range_margin"}
