"""Activation statistics of every quantizable tensor (each convolution's input and each
residual Add's skip input), collected once per calibration set.

Every calibrator needs two things of each quantizable tensor: its largest |x| (minmax)
and a histogram of |x| (entropy, percentile, mse, and the candidates of range search).
The first sweep also keeps each channel's largest |x| (axis 1), at no extra pass: what
equalization (quant.equalize) balances, and how far a tensor's channels spread.
They are collected here once, with the PyTorch graph executor on the compute device, and
each INT8 variant computes its ranges from them; no variant runs the model to calibrate.

Two sweeps over the calibration latents: the first finds each tensor's amax, the second
counts |x| into NUM_BINS equal bins over [0, amax]. That is the histogram TensorRT's
entropy calibration is described on (2048 bins of |x|); NVIDIA's pytorch-quantization
instead fixes the bin width from the first batch and widens the range as larger values
arrive, which makes the histogram depend on the order of the latents -- fixing the range
first does not. Counts are exact integers (int64 bincount, not float32 histc, which loses
counts above 2^24 per bin at 60 s windows). Memory stays bounded: one latent at a time,
activations freed as the graph advances, and large tensors binned in chunks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_engines.core import device as devices
from vae_engines.core.errors import UserError
from vae_engines.core.fileio import write_json, write_npz
from vae_engines.data.latentset import read_latent_set, set_digest
from vae_engines.graph.execute import GraphExecutor
from vae_engines.graph.io import load_onnx
from vae_engines.quant.qdq import Layer, quantizable_layers, skip_tensors

log = logging.getLogger(__name__)

NUM_BINS = 2048
CHUNK = 1 << 24  # elements binned at once


@dataclass
class ActivationStats:
    """amax[t] and hist[t] (NUM_BINS int64 counts of |x| over [0, amax[t]]) per tensor t, and
    channel_amax[t] (the largest |x| of each channel, axis 1; None in statistics written
    before it was kept)."""

    tensors: list[str]
    amax: np.ndarray
    hist: np.ndarray | None  # None: maxima only (quant.equalize derives them for minmax)
    channel_amax: list[np.ndarray] | None = None

    def of(self, tensor: str) -> tuple[np.ndarray, np.ndarray]:
        """(counts, bin edges) of one tensor."""
        if self.hist is None:
            raise ValueError("these statistics have maxima only (derived for minmax); collect histograms")
        i = self.tensors.index(tensor)
        return self.hist[i], np.linspace(0.0, float(self.amax[i]), NUM_BINS + 1)

    def max_of(self, tensor: str) -> float:
        return float(self.amax[self.tensors.index(tensor)])

    def channels(self) -> dict[str, np.ndarray]:
        """tensor -> its per-channel |x| maxima; a UserError for statistics without them."""
        if self.channel_amax is None:
            raise UserError("the activation statistics predate per-channel ranges; run `dvc repro stats` (or "
                            "`dvc repro`) to collect them again")
        return dict(zip(self.tensors, self.channel_amax))


def collect(executor: Any, tensors: list[str], latents: np.ndarray, progress: Any = None) -> ActivationStats:
    """Statistics of `tensors` over `latents` [N, C, T] in two sweeps, the latents decoded a
    few at a time on a GPU (core.device.batch_size)."""
    size = devices.batch_size(latents.shape[-1], executor.device)
    tensors = list(dict.fromkeys(tensors))
    wanted = set(tensors)
    device = executor.device
    channel: dict[str, Any] = {}

    def observe_max(name: str, x: Any) -> None:
        if name in wanted:
            m = x.detach().abs().amax(dim=[d for d in range(x.dim()) if d != 1]).double()
            channel[name] = torch.maximum(channel[name], m) if name in channel else m

    groups = [latents[i:i + size] for i in range(0, len(latents), size)]
    total = 2 * len(groups)
    for i, group in enumerate(groups):
        executor.run(group, observe=observe_max)
        if progress:
            progress(i + 1, total)
    channel_amax = [channel[t].cpu().numpy() for t in tensors]
    top = {t: float(c.max()) for t, c in zip(tensors, channel_amax)}
    counts = {t: torch.zeros(NUM_BINS, dtype=torch.int64, device=device) for t in tensors}

    def observe_hist(name: str, x: Any) -> None:
        if name not in wanted:
            return
        flat = x.detach().reshape(-1)
        width = top[name] / NUM_BINS
        if width == 0:
            counts[name][0] += flat.numel()
            return
        for start in range(0, flat.numel(), CHUNK):
            part = flat[start:start + CHUNK].abs().double()
            index = torch.clamp((part / width).long(), max=NUM_BINS - 1)
            counts[name] += torch.bincount(index, minlength=NUM_BINS)

    for i, group in enumerate(groups):
        executor.run(group, observe=observe_hist)
        if progress:
            progress(len(groups) + i + 1, total)
    return ActivationStats(tensors, np.array([top[t] for t in tensors], dtype=np.float64),
                           np.stack([counts[t].cpu().numpy() for t in tensors]), channel_amax)


def write_stats(npz_path: str | Path, json_path: str | Path, stats: ActivationStats, layers: list[Layer],
                record: dict) -> None:
    """stats.npz (the arrays: what variants depend on) and stats.json (per-tensor summary and
    provenance, timings included), each atomically."""
    role = {**{l.skip.tensor: f"{l.name} skip" for l in layers if l.skip}, **{l.activation: l.name for l in layers}}
    summary = {}
    for i, t in enumerate(stats.tensors):
        counts = stats.hist[i]
        summary[t] = {"layer": role[t], "amax": float(f"{stats.amax[i]:.7g}"), "values": int(counts.sum()),
                      "share_in_top_bin": float(f"{counts[-1] / max(counts.sum(), 1):.3g}")}
        if stats.channel_amax is not None:  # how far its channels spread: what equalization can even out
            c = stats.channel_amax[i]
            summary[t]["channel_max_over_median"] = float(f"{c.max() / max(np.median(c), 1e-30):.4g}")
    arrays = {"tensors": np.array(stats.tensors), "amax": stats.amax, "hist": stats.hist}
    if stats.channel_amax is not None:  # ragged: one flat array and each tensor's offset into it
        arrays["channel_amax"] = np.concatenate(stats.channel_amax)
        arrays["channel_offsets"] = np.cumsum([0] + [len(c) for c in stats.channel_amax])
    write_npz(npz_path, arrays)
    write_json(json_path, {**record, "num_bins": NUM_BINS, "tensors": summary})


def read_stats(path: str | Path) -> ActivationStats:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; run `dvc repro` to collect the activation statistics")
    try:
        with np.load(path, allow_pickle=False) as data:
            channel = None
            if "channel_amax" in data:
                flat, offsets = data["channel_amax"], data["channel_offsets"]
                channel = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
            return ActivationStats([str(t) for t in data["tensors"]], data["amax"], data["hist"], channel)
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({type(exc).__name__}); delete it and run `dvc repro`") from None


def quantizable_tensors(layers: list[Layer]) -> list[str]:
    """Every tensor a placement may quantize: convolution inputs, then residual skips."""
    return list(dict.fromkeys([layer.activation for layer in layers] + skip_tensors(layers)))


def collect_stats(fp32_onnx: str | Path, calibration_dir: str | Path, npz_path: str | Path, json_path: str | Path,
                  *, device: Any) -> None:
    """The `stats` stage: statistics of the fp32 graph on the calibration latents."""
    model = load_onnx(fp32_onnx)
    layers = quantizable_layers(model)
    executor = GraphExecutor(model, device)
    del model
    latents = read_latent_set(calibration_dir)
    start = time.perf_counter()
    stats = collect(executor, quantizable_tensors(layers), latents)
    devices.synchronize(device)
    seconds = time.perf_counter() - start
    log.info("statistics of %d tensors over %d latents x %d frames in %.1f s on %s", len(stats.tensors),
             len(latents), latents.shape[-1], seconds, device)
    record = {"latents": int(len(latents)), "frames": int(latents.shape[-1]),
              "calibration_sha256": set_digest(calibration_dir), "seconds": round(seconds, 2),
              "sweeps": 2, "compute": {**executor.describe(), **devices.describe(device)}}
    write_stats(npz_path, json_path, stats, layers, record)
