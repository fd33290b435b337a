"""The `bench@<variant>` stage: one variant's engine beside its references, where it can run.

- tensorrt: the variant's plan and the fp16 plan, timed in the same rounds on the GPU that
  can run them (runtime.tensorrt), with streaming and device memory; where no GPU here
  can, "not measured" with the reason -- found in milliseconds, without importing torch,
  so a stage with nothing to time costs its Python start-up and no more.
- onnxruntime (off by default): the variant's graph, fp16.onnx and fp32.onnx on ONNX
  Runtime's CPU provider; what that executes is named (not int8 or fp16 speed).

Always: the plan's size against the fp16 plan, and what the backend does with the
variant's INT8 (trt.build.int8_execution), read from the plan's record. bench.json holds
the typed records (every round's times, summaries, ratios with their intervals and
verdicts, streaming, memory) and their provenance; latency.json the rows `dvc plots` draws.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vae_engines.core.choices import Runtime
from vae_engines.core.env import fingerprint
from vae_engines.core.fileio import write_json
from vae_engines.core.lazy import lazy_import
from vae_engines.core.params import BenchParams
from vae_engines.trt.backend import installed
from vae_engines.trt.plan import plan_metadata, unavailable_reason

# what times the plans loads only where something is timed: a stage with nothing to time
# decides, writes its record and ends in a fraction of a second (no numpy, torch or runtime)
timing = lazy_import("vae_engines.measure.timing")
onnx_runtime = lazy_import("vae_engines.runtime.onnx")
tensorrt_runtime = lazy_import("vae_engines.runtime.tensorrt")

log = logging.getLogger(__name__)


def time_group(group: dict[str, Any], bench: BenchParams, channels: int) -> tuple[list[dict], list[dict]]:
    """(timing summaries, ratios of the first decoder against each other) at every point."""
    timings, ratios = [], []
    names = list(group)
    for batch in bench.batches:
        for frames in bench.frames:
            point = timing.interleaved(group, batch, frames, channels, bench.warmup, bench.repeats)
            timings += [t.summary() for t in point.values()]
            ratios += [timing.paired_ratio(point[names[0]], point[reference]) for reference in names[1:]]
    return timings, ratios


def nothing_to_time(bench: BenchParams, backend: str) -> str | None:
    """Why a bench@ stage would time nothing on this machine, or None where it times something
    (ONNX Runtime in bench.runtimes, or a TensorRT that can run plans here). build.backend `auto`
    is TensorRT where it is installed, else TensorRT-RTX (trt.backend.resolve's order, found
    without importing either)."""
    if Runtime.ONNXRUNTIME in bench.runtimes:
        return None
    if Runtime.TENSORRT not in bench.runtimes:
        return "neither tensorrt nor onnxruntime is in bench.runtimes"
    name = str(backend) if backend != "auto" else "tensorrt" if installed("tensorrt") else "tensorrt_rtx"
    reason = unavailable_reason(name)
    return None if reason is None else f"its plans cannot run here ({reason})"


def variant_groups(variant: str, bench: BenchParams, threads: int, *, onnx: dict[str, Path],
                   plans: dict[str, Path], backend: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The decoders to compare, by runtime, and why any runtime asked for is not measured.
    onnx / plans: the variant's own first, then its references (checked whole already)."""
    groups: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    reason = unavailable_reason(backend)
    if Runtime.TENSORRT not in bench.runtimes:
        notes["tensorrt"] = "not measured: not in bench.runtimes"
    elif reason is not None:
        notes["tensorrt"] = f"not measured: {reason}"
    else:
        # timed on a seeded normal latent, beyond an INT8 plan's range where the model's latents are
        # smaller: speed does not depend on it, so the range guard is off (runtime.guard)
        groups["tensorrt"] = {f"{name} ({backend})": tensorrt_runtime.PlanDecoder(path, on_range="off")
                              for name, path in plans.items()}
    if Runtime.ONNXRUNTIME in bench.runtimes:
        groups["onnxruntime"] = {f"{name} (onnxruntime)": onnx_runtime.OnnxDecoder(path, threads, on_range="off")
                                 for name, path in onnx.items()}
    else:
        notes["onnxruntime"] = "not measured: not in bench.runtimes (add onnxruntime to time the graphs on the CPU)"
    return groups, notes


def bench_variant(variant: str, bench: BenchParams, *, threads: int, onnx: dict[str, Path], plans: dict[str, Path],
                  out_json: str | Path, plot_json: str | Path) -> dict:
    """Time `variant` beside its references (see the module docstring); returns bench.json."""
    # a damaged plan is an error here; its bytes are hashed where it is loaded (PlanDecoder does)
    records = {name: plan_metadata(path, hashed=False) for name, path in plans.items()}
    plan, backend = records[variant], records[variant]["backend"]
    groups, notes = variant_groups(variant, bench, threads, onnx=onnx, plans=plans, backend=backend)
    memory = {"plan_bytes": plan["plan_bytes"], "onnx_bytes": onnx[variant].stat().st_size}
    if variant != "fp16" and "fp16" in records:
        memory["plan_vs_fp16"] = round(plan["plan_bytes"] / records["fp16"]["plan_bytes"], 3)
    timings, ratios, stream, described = [], [], {}, {}
    for kind, group in groups.items():
        log.info("bench %s: %s", variant, kind)
        channels = next(iter(group.values())).shape.channels
        described.update({name: d.describe() for name, d in group.items()})
        with timing.PeakRss() as rss:
            t, r = time_group(group, bench, channels)
        timings, ratios = timings + t, ratios + r
        memory[f"{kind}_peak_rss_mib"] = round(rss.peak / 2**20, 1)
        for name, decoder in group.items():
            stream[name] = timing.streaming(decoder, channels, bench.stream_frames, bench.stream_window,
                                            bench.stream_overlap, warmup=bench.warmup)
    if "tensorrt" in groups:
        memory["engine_device_memory_bytes"] = described[f"{variant} ({backend})"]["device_memory_bytes"]
    doc = {"variant": variant, "timings": timings, "ratios": ratios, "streaming": stream, "memory": memory,
           "not_measured": notes, "tensorrt": notes.get("tensorrt", "measured"),
           "engine": {k: plan[k] for k in ("backend", "backend_version", "target", "build_seconds", "plan_bytes",
                                           "num_layers", "precisions", "precision", "int8_execution") if k in plan},
           "runtimes": described,
           "method": {"warmup": bench.warmup, "rounds": bench.repeats, "order": "runtimes take turns, order rotating",
                      "ratio": "median of per-round ratios, 95% bootstrap interval; a difference is called only "
                               "where the interval excludes 1"},
           "machine": fingerprint(), "bench": bench_params(bench)}
    write_json(out_json, doc)
    write_json(plot_json, latency_rows(timings))
    return doc


def bench_params(bench: BenchParams) -> dict:
    """The bench params a record was made with (provenance)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(bench).items()}


def latency_rows(timings: list[dict]) -> list[dict]:
    return [{"series": t["series"], "batch": t["batch"], "frames": t["frames"], "median_ms": t["median_ms"],
             "p10_ms": t["p10_ms"], "p90_ms": t["p90_ms"]} for t in timings]
