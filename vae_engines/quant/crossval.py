"""Two-fold cross-validation over calibration latents, shared by the recipe options that
choose a setting on the calibration latents alone (quant.equalize's migration, quant.margin's
range margin): the two halves, and the candidate of least error."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np


def halves(latents: np.ndarray) -> list[np.ndarray]:
    """The first and the second half of `latents` (each is fitted on, and scored on the other)."""
    return [latents[: len(latents) // 2], latents[len(latents) // 2:]]


def least_error(candidates: tuple, error: Callable[[Hashable], float]) -> tuple[Hashable, dict[str, float]]:
    """The candidate of least `error` (ties: the earlier one), and each candidate's error by
    name ("none" for None)."""
    errors = {c: float(error(c)) for c in candidates}
    best = min(candidates, key=lambda c: errors[c])
    return best, {("none" if c is None else str(c)): e for c, e in errors.items()}
