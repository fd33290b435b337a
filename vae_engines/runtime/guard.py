"""The latent check every decode runs: NaN / inf, and for an INT8 engine its input range.

An INT8 engine quantizes with ranges calibrated on some latents. A latent far beyond them
saturates the first int8 input (conv1 reads the latent itself) and every range after it,
and the engine returns clipped audio without a word: on the lent H100 a unit-normal latent,
41.7x the 60 s configuration's calibrated range, came out at 27-28 dB against fp32 where
the fp16 engine held 71.5 dB (issue 38). So an INT8 engine records the calibrated range of
its input (`input_range`, the max |x| its calibrator chose for the latent), and a latent
whose max |x| lies beyond `range_guard` times it is refused (`on_range="error"`), reported
(`"warn"`: a LatentRangeWarning, and the decode goes on) or let through (`"off"`).
fp16 and fp32 engines have no range and no guard.

Both tests read one number: max |x|, one reduction (NaN where x holds a NaN, inf where it
holds an inf and no NaN), read back once. On a GPU the value is copied into pinned host
memory behind an event, and a decode queues itself before waiting on that event
(Decoder.decode): the host waits for the reduction alone, not for the decode, and the
decode starts without waiting for the host. Measured on the lent H100 before this
(benchmarks/results/gpu_units/h100_run8_check): reading the check back with `tolist()`
after queuing the decode waited for the whole decode (a copy is ordered behind the decode
on its stream), and gained nothing over reading it first. An error discards the audio.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import

torch = lazy_import("torch")

# Measured on the embedded default's INT8 graphs (README, "Run an engine in your app";
# benchmarks/range_guard.py): held-out latents scaled past the calibrated range lose 7-8 dB
# by 1.5x, 11-15 dB by 2x, and sit at 27-30 dB by 3x; the held-out latents themselves reach
# 1.66x entropy's range, so 2 is the smallest round factor that passes them all.
DEFAULT_RANGE_GUARD = 2.0


class OnRange(StrEnum):
    """What a decode does with a latent beyond an INT8 engine's guarded range."""

    ERROR = "error"  # refuse it: a UserError naming the factor and the fix
    WARN = "warn"  # decode it, with a LatentRangeWarning
    OFF = "off"  # decode it silently (benchmarks that decode a seeded latent on purpose)


class LatentRangeWarning(UserWarning):
    """A latent beyond an INT8 engine's calibrated range was decoded (on_range="warn")."""


def on_range_of(value: OnRange | str, what: str) -> OnRange:
    """`value` as an OnRange, or a one-line UserError listing the choices."""
    try:
        return OnRange(value)
    except ValueError:
        raise UserError(f"{what}: on_range={value!r}; use one of {', '.join(repr(m.value) for m in OnRange)}") from None


@dataclass(frozen=True)
class RangeGuard:
    """An engine's guard: the calibrated max |x| of its input (None: a float engine, no
    guard), the factor beyond which a latent is out of range, and what to do then."""

    engine: str
    input_range: float | None = None
    factor: float = DEFAULT_RANGE_GUARD
    on_range: OnRange = OnRange.ERROR

    @classmethod
    def of(cls, engine: str, input_range: float | None, factor: float | None = None,
           on_range: OnRange | str | None = None) -> RangeGuard:
        """The guard of `engine` (its name in messages); None: the defaults."""
        factor = DEFAULT_RANGE_GUARD if factor is None else factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise UserError(f"{engine}: range_guard={factor!r}; give a factor > 0 (default {DEFAULT_RANGE_GUARD}), "
                            "or on_range='off' to decode any latent")
        action = on_range_of(OnRange.ERROR if on_range is None else on_range, engine)
        return cls(engine, None if input_range is None else float(input_range), float(factor), action)

    def action(self, on_range: OnRange | str | None = None) -> OnRange:
        """What this decode does out of range: the call's on_range, else the engine's;
        always OFF without a calibrated range."""
        if self.input_range is None:
            return OnRange.OFF
        return self.on_range if on_range is None else on_range_of(on_range, self.engine)

    def describe(self) -> dict:
        """The record's view (empty for a float engine)."""
        if self.input_range is None:
            return {}
        return {"calibrated_input_range": self.input_range, "range_guard": self.factor, "on_range": str(self.on_range)}

    def out_of_range(self, absmax: float, action: OnRange) -> None:
        """Refuse or report a latent of max |x| `absmax` beyond factor x input_range."""
        if action == OnRange.OFF or not absmax > self.factor * self.input_range:
            return
        times = absmax / self.input_range
        message = (f"{self.engine}: latent max |x| {absmax:.4g} is {times:.1f}x the engine's calibrated input range "
                   f"{self.input_range:.4g} (range_guard {self.factor:g}): its INT8 layers saturate and the audio "
                   "degrades; calibrate on latents like these (calibration.source: latents, with what your "
                   "generator produces) and rebuild")
        if action == OnRange.ERROR:
            raise UserError(f"{message}, or pass on_range='warn' (load or decode) to decode anyway")
        # 5: out_of_range <- settle_latent_check <- Decoder.settle / .check <- decode / stream_decode <- the caller
        warnings.warn(f"{message} (decoded anyway: on_range='warn')", LatentRangeWarning, stacklevel=5)


def finite_error(x: Any, what: str) -> UserError:
    """The error naming the first NaN / inf of latent x [B, C, T] (x holds one)."""
    bad = (~torch.isfinite(x)).nonzero()
    b, c, t = (int(v) for v in bad[0])
    return UserError(f"{what}: the latent holds {len(bad)} NaN/inf values (the first at batch {b}, channel {c}, "
                     f"frame {t}): the generation that made it diverged; fix it upstream (decode(..., "
                     "check_finite=False) skips this check)")


def check_latent(x: Any, what: str, guard: RangeGuard, *, check_finite: bool = True,
                 on_range: OnRange | str | None = None) -> None:
    """The finite check (check_finite) and `guard`'s range check of latent x, from one
    readback; nothing is read back when neither applies."""
    settle_latent_check(x, what, guard, start_latent_check(x, guard, check_finite, on_range), check_finite, on_range)


@dataclass(frozen=True)
class PendingCheck:
    """A latent check in flight: `absmax` holds max |x| once `done` (a CUDA event, None on
    the CPU, where the value is already there) has passed."""

    absmax: Any
    done: Any = None

    def read(self) -> float:
        """max |x| on the host: the check's one readback."""
        if self.done is not None:
            self.done.synchronize()
        return self.absmax.item()


def start_latent_check(x: Any, guard: RangeGuard, check_finite: bool = True,
                       on_range: OnRange | str | None = None) -> PendingCheck | None:
    """The check's reduction of latent x, queued on its device and not read yet (None where
    nothing is checked). On a GPU its value travels to pinned host memory behind an event,
    so that reading it (settle_latent_check) waits for the reduction and the copy only, not
    for the work queued after them."""
    if not check_finite and guard.action(on_range) == OnRange.OFF:
        return None
    if x.numel() == 0:
        return PendingCheck(torch.zeros(()))
    # max |x|; a NaN or an inf propagates (tests on the CPU, benchmarks/gpu_units.py on a GPU). On
    # the CPU abs + amax: torch's inf-norm is slower there (0.25 against 0.016 ms for a 60 s latent,
    # one thread of a 2-core AMD EPYC, where isfinite().all() took 0.19 ms); on a GPU, one kernel
    if x.device.type != "cuda":
        return PendingCheck(x.abs().amax())
    absmax = torch.linalg.vector_norm(x, ord=math.inf)
    host = torch.empty((), dtype=absmax.dtype, pin_memory=True)
    host.copy_(absmax, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return PendingCheck(host, done)


def settle_latent_check(x: Any, what: str, guard: RangeGuard, pending: PendingCheck | None, check_finite: bool = True,
                        on_range: OnRange | str | None = None) -> None:
    """Read `pending` (start_latent_check's) back once; raise or warn as check_latent does."""
    if pending is None:
        return
    absmax = pending.read()
    if check_finite and not math.isfinite(absmax):
        raise finite_error(x, what)
    guard.out_of_range(absmax, guard.action(on_range))
