"""The `bench_fp16` / `bench@<variant>` stage: which runtimes are timed, and what is written.

A variant is timed beside the fp16 and fp32 references of the same runtime, in the same
process and rounds, so every ratio compares numbers of one run:

- onnxruntime: the variant's graph, fp16.onnx and fp32.onnx on ONNX Runtime's CPU
  provider (what it executes is named: not int8 or fp16 speed);
- tensorrt: the variant's engine and the fp16 engine, where a GPU can run them; otherwise
  "not measured" with the reason;
- torch (bench_fp16 only; the same for every variant): the PyTorch decoder at
  bench.torch_precisions, eager (and torch.compile'd with bench.torch_compile), on the
  compute device -- what a user would run instead of an engine.

bench.json holds the typed records (every round's times, summaries, ratios with their
intervals and verdicts, streaming, memory) and their provenance; latency.json holds the
median rows `dvc plots` draws.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vae_engines.core.fileio import read_json, write_json
from vae_engines.measure.bench import PeakRss, interleaved, paired_ratio, streaming

log = logging.getLogger(__name__)

CPU_HALF_REASON = ("not measured: torch's CPU half-precision convolutions are about 170x slower than fp32 here "
                   "(not a deployment path); measured on CUDA")


def _torch_runtimes(params: Any, device: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from vae_engines.measure.runtimes import TorchRuntime
    from vae_engines.model.oobleck import fold_decoder, load_vae

    decoder = fold_decoder(load_vae(params.model).vae)
    out, skipped = {}, {}
    for precision in params.bench.torch_precisions:
        label = f"torch {precision} eager"
        if precision == "fp16" and device.type == "cpu":
            skipped[label] = CPU_HALF_REASON
            continue
        out[label] = TorchRuntime(decoder, device, precision)
        if params.bench.torch_compile:
            out[f"torch {precision} compile"] = TorchRuntime(decoder, device, precision, compile=True)
    return out, skipped


def bench_stage(variant: str, params: Any, *, onnx_path: str | Path, fp16_onnx: str | Path, fp32_onnx: str | Path,
                plan: str | Path, fp16_plan: str | Path, out_json: str | Path, plot_json: str | Path) -> None:
    from vae_engines.core import device as devices
    from vae_engines.core.env import fingerprint
    from vae_engines.core.params import section_hash
    from vae_engines.graph.io import model_facts
    from vae_engines.measure.runtimes import OrtRuntime, TensorRTRuntime, tensorrt_status

    bench = params.bench
    device = devices.resolve(params.compute.device, params.compute.threads)
    hop, sr = model_facts(onnx_path)
    channels = 64
    status = tensorrt_status(params.build.backend, plan)
    if variant != "fp16":
        tensorrt_status(params.build.backend, fp16_plan)  # a truncated reference plan is an error too
    groups: dict[str, dict[str, Any]] = {}  # runtimes compared with each other
    notes: dict[str, str] = {}
    if "onnxruntime" in bench.runtimes:
        group = {f"{variant} (onnxruntime)": OrtRuntime(onnx_path, params.compute.threads)}
        if variant != "fp16":
            group["fp16 (onnxruntime)"] = OrtRuntime(fp16_onnx, params.compute.threads)
        group["fp32 (onnxruntime)"] = OrtRuntime(fp32_onnx, params.compute.threads)
        groups["onnxruntime"] = group
    else:
        notes["onnxruntime"] = "not measured: not in bench.runtimes"
    backend = params.build.backend
    if "tensorrt" not in bench.runtimes:
        notes["tensorrt"] = "not measured: not in bench.runtimes"
    elif status is not None:
        notes["tensorrt"] = status
    else:
        group = {f"{variant} ({backend})": TensorRTRuntime(backend, plan)}
        if variant != "fp16":
            group[f"fp16 ({backend})"] = TensorRTRuntime(backend, fp16_plan)
        groups["tensorrt"] = group
    if "torch" in bench.runtimes and variant == "fp16":
        group, skipped = _torch_runtimes(params, device)
        notes.update(skipped)
        if group:
            groups["torch"] = group
    elif "torch" not in bench.runtimes:
        notes["torch"] = "not measured: not in bench.runtimes"

    timings, ratios, memory, described = [], [], {}, {}
    for kind, group in groups.items():
        names = list(group)
        described.update({name: rt.describe() for name, rt in group.items()})
        with PeakRss() as rss:
            for batch in bench.batches:
                for frames in bench.frames:
                    log.info("bench %s: %s at batch %d, %d frames", variant, kind, batch, frames)
                    point = interleaved(group, batch, frames, channels, bench.warmup, bench.repeats)
                    timings += [t.summary() for t in point.values()]
                    if kind == "torch":  # every precision and mode against eager fp32
                        ratios += [paired_ratio(point[name], point[names[0]]) for name in names[1:]]
                    else:  # the variant against its fp16 and fp32 references
                        ratios += [paired_ratio(point[names[0]], point[reference]) for reference in names[1:]]
        memory[f"{kind}_peak_rss_mib"] = round(rss.peak / 2**20, 1)
    stream = {}
    for kind in ("tensorrt", "onnxruntime"):
        if kind in groups:
            for name in list(groups[kind])[:1] + [n for n in groups[kind] if n.startswith("fp32")]:
                stream[name] = streaming(groups[kind][name].time_ms, channels, bench.stream_frames,
                                         bench.stream_window, bench.stream_overlap, hop, sr)
    plan_meta = read_json(Path(plan).with_suffix(".json"))
    if "tensorrt" in groups:
        memory["engine_device_memory_bytes"] = described[f"{variant} ({backend})"]["device_memory_bytes"]
    memory.update({"plan_bytes": plan_meta["plan_bytes"], "onnx_bytes": Path(onnx_path).stat().st_size})
    write_json(out_json, {
        "variant": variant,
        "timings": timings,
        "ratios": ratios,
        "streaming": stream,
        "memory": memory,
        "not_measured": notes,
        "tensorrt": status or "measured",
        "engine": {k: plan_meta[k] for k in ("backend", "backend_version", "target", "build_seconds", "plan_bytes",
                                             "num_layers", "precisions") if k in plan_meta},
        "runtimes": described,
        "method": {"warmup": bench.warmup, "rounds": bench.repeats, "order": "runtimes take turns, order rotating",
                   "ratio": "median of per-round ratios, 95% bootstrap interval; a difference is called only "
                            "where the interval excludes 1"},
        "machine": fingerprint(),
        "params_hash": section_hash(params.model, params.profile, bench, params.int8.get(variant), params.compute),
    })
    write_json(plot_json, [{"series": t["series"], "batch": t["batch"], "frames": t["frames"],
                            "median_ms": t["median_ms"], "p10_ms": t["p10_ms"], "p90_ms": t["p90_ms"]}
                           for t in timings])
