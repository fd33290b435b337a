"""Windowed decoding: a long latent in overlapping windows, stitched into one signal.

What a streaming app or a small GPU does: decode `window` frames at a time, consecutive
windows overlapping by `overlap` frames. A window's audio is least accurate near its edges
(the decoder there sees padding instead of the neighbouring frames), so each window gives
way to the next around the middle of their overlap: ownership changes over a raised-cosine
crossfade of half the overlap (at most half a step), centred there, and the window edges
themselves are discarded. With an overlap wider than the decoder's receptive field the stitched signal
equals the full decode up to rounding; `measure.timing` reports how close it is.

`stream_decode` yields the stitched audio in order as each piece becomes final, so an app
can play or forward it while the next window decodes; joined, the pieces are the whole
signal.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from vae_engines.core.errors import UserError
from vae_engines.core.lazy import lazy_import

torch = lazy_import("torch")


def windows(total: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """(start, stop) frame windows of `window` frames covering `total`, each starting
    `window - overlap` after the last (the last one aligned to the end)."""
    if not 0 <= overlap < window:
        raise UserError(f"streaming needs 0 <= overlap < window, got overlap {overlap} and window {window}")
    if total <= window:
        return [(0, total)]
    step = window - overlap
    starts = list(range(0, total - window + 1, step))
    if starts[-1] + window < total:
        starts.append(total - window)
    return [(s, s + window) for s in starts]


def crossfades(spans: list[tuple[int, int]], overlap: int, hop: int) -> list[tuple[int, int]]:
    """(first, last) audio samples of the crossfade between each pair of consecutive
    windows, centred in their actual overlap: half the overlap wide, and never wider than
    half a step, so consecutive crossfades cannot meet."""
    window = spans[0][1] - spans[0][0]
    width = (min(overlap, window - overlap) // 2) * hop
    zones = []
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        centre = (start + stop) * hop // 2
        zones.append((centre - width // 2, centre - width // 2 + width))
    return zones


def _ramp(width: int, like: Any) -> Any:
    """Raised-cosine weights rising from 0 to 1 over `width` samples (empty for 0)."""
    t = (torch.arange(width, device=like.device, dtype=torch.float64) + 0.5) / max(width, 1)
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(like.dtype)


def stream_decode(decoder: Any, latent: Any, window: int, overlap: int, *, check_finite: bool = True,
                  on_range: Any = None) -> Iterator[Any]:
    """Yield the windowed decode of `latent` [B, C, T] by `decoder` (a runtime Decoder) in
    order; each piece is final when yielded. The whole latent is checked once, before the
    first window (decoder.check: one readback, not one per window)."""
    x = decoder.to_device(latent)
    decoder.check(x, check_finite=check_finite, on_range=on_range)
    hop = decoder.shape.hop
    spans = windows(x.shape[-1], window, overlap)
    zones = crossfades(spans, overlap, hop)
    emitted, carry = 0, None
    for k, (start, stop) in enumerate(spans):
        out = decoder.decode(x[..., start:stop], check_finite=False, on_range="off")
        base = start * hop
        if k > 0:  # finish the crossfade with the previous window
            first, last = zones[k - 1]
            yield carry + out[..., first - base:last - base] * _ramp(last - first, out)
            emitted = last
        if k == len(spans) - 1:
            yield out[..., emitted - base:]
            return
        first, last = zones[k]
        yield out[..., emitted - base:first - base]
        carry = out[..., first - base:last - base] * (1 - _ramp(last - first, out))
        emitted = first


def decode_windowed(decoder: Any, latent: Any, window: int, overlap: int) -> Any:
    """The whole stitched signal of `stream_decode`."""
    return torch.cat(list(stream_decode(decoder, latent, window, overlap)), dim=-1)
