"""What every engine kind is to its caller: a `Decoder`.

`decode(latent)` takes a latent [B, C, T] (or [C, T]) as a torch tensor -- or a numpy
array, for convenience -- on any device and in any float type, and returns float32 audio
[B, audio_channels, T * hop] as a torch tensor on the engine's device. A latent holding NaN
or inf is refused with an error that says where (a diverged generation would otherwise come
out as NaN audio and fail far from its cause); an INT8 engine also refuses a latent beyond
`range_guard` times its calibrated input range, where its int8 layers saturate (runtime.guard:
`on_range="warn"` decodes it with a warning, `"off"` silently). Both tests read one tensor
back from the device, so on a GPU the check waits for the latent to be computed:
`check_finite=False` skips the finite test, and with no range to guard the readback. A
latent already on that device is not copied through the host; on a GPU the work is queued
on the caller's current CUDA stream. `stream(latent, window, overlap)` decodes in overlapping windows and
yields the stitched audio as it becomes final (runtime.stream). `describe()` says what
runs: the kind, the device, and the precision that actually executes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import
from vae_engines.runtime.guard import OnRange, RangeGuard, settle_latent_check, start_latent_check
from vae_engines.runtime.stream import stream_decode

torch = lazy_import("torch")


@dataclass(frozen=True)
class Shape:
    """What an engine accepts and makes: latent channels, the hop (audio samples per latent
    frame), the sampling rate, and the frames and batch range (None: any)."""

    channels: int
    hop: int
    sampling_rate: int
    frames: tuple[int, int] | None = None
    batch: tuple[int, int] | None = None

    def check(self, shape: tuple[int, ...], what: str) -> None:
        if len(shape) != 3 or shape[1] != self.channels:
            raise UserError(f"{what}: latent of shape {list(shape)}; the engine takes [B, {self.channels}, T]")
        for axis, limits, name in ((2, self.frames, "frames"), (0, self.batch, "batch")):
            if limits is not None and not limits[0] <= shape[axis] <= limits[1]:
                raise UserError(f"{what}: {shape[axis]} {name} is outside the engine's {limits[0]}..{limits[1]}; "
                                f"decode in windows (Decoder.stream) or rebuild with a wider profile")


class Decoder(ABC):
    """Base of every engine kind: subclasses set `kind`, `precision`, `device`, `shape`
    (an INT8 kind also `guard`, its calibrated input range) and implement `_run(x)` on a
    float32 latent already on `device`."""

    kind: str = ""
    precision: str = ""
    device: Any = None
    shape: Shape
    guard: RangeGuard = RangeGuard("engine")  # no range: no range check

    @abstractmethod
    def _run(self, x: Any) -> Any:
        """float32 audio of a float32 latent [B, C, T] on `device`, checked against `shape`."""

    def to_device(self, latent: Any) -> Any:
        """The latent as a contiguous float32 [B, C, T] tensor on this engine's device."""
        x = latent if isinstance(latent, torch.Tensor) else torch.from_numpy(latent)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if not x.is_floating_point():
            raise UserError(f"{self.kind} engine: latent of type {x.dtype}; pass a float tensor")
        return x.to(device=self.device, dtype=torch.float32).contiguous()

    def prepare(self, latent: Any) -> Any:
        """`to_device`, checked against what the engine accepts."""
        x = self.to_device(latent)
        self.shape.check(tuple(x.shape), f"{self.kind} engine")
        return x

    def check(self, x: Any, *, check_finite: bool = True, on_range: OnRange | str | None = None) -> None:
        """The latent check of x (on this device): NaN / inf, and the INT8 range guard."""
        settle_latent_check(x, f"{self.kind} engine", self.guard, start_latent_check(x, self.guard, check_finite,
                                                                                      on_range), check_finite, on_range)

    def decode(self, latent: Any, *, check_finite: bool = True, on_range: OnRange | str | None = None) -> Any:
        """float32 audio [B, A, T * hop] on this engine's device (module docstring for
        check_finite; on_range: this call's "error" / "warn" / "off", None: the engine's).
        On a GPU the check's readback comes after the decode is queued (runtime.guard), so
        a refused latent has been decoded, and its audio is dropped, by the time it raises."""
        x = self.prepare(latent)
        pending = start_latent_check(x, self.guard, check_finite, on_range)
        if not self.queues(x):  # nothing to keep busy: refuse before decoding
            self.settle(x, pending, check_finite, on_range)
            return self._run(x)
        audio = self._run(x)
        self.settle(x, pending, check_finite, on_range)
        return audio

    def queues(self, x: Any) -> bool:
        """Whether a decode of x is queued on a device the host would otherwise leave idle
        while it reads the check back (a GPU)."""
        return x.device.type == "cuda"

    def settle(self, x: Any, pending: Any, check_finite: bool, on_range: OnRange | str | None) -> None:
        """The readback of the check start_latent_check queued (as many frames below the
        caller as check() is, for the range warning's stacklevel)."""
        settle_latent_check(x, f"{self.kind} engine", self.guard, pending, check_finite, on_range)

    def stream(self, latent: Any, window: int, overlap: int, *, check_finite: bool = True,
               on_range: OnRange | str | None = None) -> Iterator[Any]:
        """The decode in windows of `window` frames overlapping by `overlap`, yielded in
        order as each piece becomes final (see runtime.stream); the whole latent is checked
        once, before the first window."""
        return stream_decode(self, latent, window, overlap, check_finite=check_finite, on_range=on_range)

    def describe(self) -> dict:
        return {"kind": self.kind, "precision": self.precision, "device": str(self.device), **self.guard.describe()}

    def close(self) -> None:
        """Release what the engine holds on its device (kinds that hold something override it)."""

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
