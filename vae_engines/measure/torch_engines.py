"""The `bench_torch` stage: the PyTorch decoder as apps run it today (eager, per precision)
beside the compiled PyTorch engines the pipeline built per precision, on the compute device,
in one run; and the `bench_int8` stage: every INT8 variant's engine in one process, each
timed in the same rounds as the compiled fp16 engine it has to beat only at the length the
report's verdicts read (the longest bench frames); elsewhere it reads against the fp16
engine's figures bench_torch recorded. An engine whose record still holds keeps it, so a
changed variant re-times its own engine alone, not every engine of the pipeline.

Every decoder goes through the runtime API (runtime.eager, runtime.compiled), so what is
timed is what an app would run. For each: latency at the bench frames (rounds taking turns,
CUDA events on a GPU), the ratio of every pair of decoders timed in the same rounds,
device memory of one decode at the longest bench frames, quality against the fp32
reference on the held-out latents, and the windowed (streaming) decode: per-call latency,
real-time factor, device memory and the stitched audio against the full decode; and a sweep
of lengths across the bench frames (cost per second of audio by length, flagging a length that
costs more than 1.25x the best from 250 frames up, or that is slower than a longer one).

Device memory is what PyTorch allocated during the decode beyond what was allocated before
it, plus the decoder's own weights: the footprint of that decode alone, though several
decoders share the device while they are compared.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from vae_engines.core import device as devices
from vae_engines.core.choices import Precision, Runtime
from vae_engines.core.env import fingerprint, source_digest
from vae_engines.core.fileio import read_json, read_keyed, write_json
from vae_engines.core.lazy import lazy_import
from vae_engines.core.params import BenchParams
from vae_engines.data.latentset import read_latent_set
from vae_engines.measure.timing import (device_memory_gib, interleaved, paired_ratio, seeded_latent, streaming,
                                      time_ms, warm_up)
from vae_engines.measure.plans import bench_params, latency_rows
from vae_engines.measure.evaluate import decode_all
from vae_engines.metrics import peak_psnr, snr
from vae_engines.runtime.base import Decoder, Shape
from vae_engines.runtime.compiled import CompiledDecoder
from vae_engines.runtime.eager import EagerDecoder

torch = lazy_import("torch")
folded = lazy_import("vae_engines.model.folded")  # bench_torch loads the folded decoder; bench_int8 needs none
log = logging.getLogger(__name__)

CPU_HALF = ("not measured: PyTorch's CPU half-precision convolutions are about 170x slower than fp32 (not a "
            "deployment path); measured on a GPU")


def torch_decoders(decoder_path: Path, bench: BenchParams, precisions: tuple[Precision, ...], engines_dir: Path,
                   device: Any) -> tuple[dict[str, Decoder], dict[str, str]]:
    """Eager decoders at bench.torch_precisions and the compiled engines at `precisions`."""
    loaded = folded.load_folded(decoder_path)
    decoder = loaded.decoder
    shape = Shape(channels=loaded.latent_channels, hop=loaded.hop, sampling_rate=loaded.sampling_rate)
    out: dict[str, Decoder] = {}
    notes: dict[str, str] = {}
    for precision in bench.torch_precisions:
        if precision != Precision.FP32 and device.type == "cpu":
            notes[f"eager {precision}"] = CPU_HALF
            continue
        out[f"eager {precision}"] = EagerDecoder(decoder, shape, precision, device)
    for precision in precisions:
        out[f"compiled {precision}"] = CompiledDecoder(engines_dir / f"{precision}.pt2")
    return out, notes


def swept(decoders: dict[str, Decoder]) -> dict[str, Decoder]:
    """The decoders the length sweep times: the compiled engines, else (none built) eager fp32."""
    compiled = {name: d for name, d in decoders.items() if name.startswith("compiled")}
    return compiled or {name: d for name, d in decoders.items() if name == "eager fp32"}


def decode_memory_gib(decoder: Decoder, x: Any) -> float | None:
    """Device memory of one decode of `x` alone (measure.timing.device_memory_gib); None on a CPU."""
    return device_memory_gib(decoder, lambda: decoder.decode(x))


def heldout_quality(decoders: dict[str, Decoder], holdout_dir: Path, reference_dir: Path) -> dict[str, dict]:
    """Peak PSNR and SNR of each decoder's held-out decodes against the fp32 reference."""
    latents = read_latent_set(holdout_dir)
    reference = np.load(Path(reference_dir) / "heldout_fp32.npy")
    out = {}
    for name, decoder in decoders.items():
        decoded = decode_all(decoder, latents, name)  # as evaluate decodes: batched on a GPU, NaN is an error
        out[name] = {"peak_psnr_db": round(peak_psnr(reference, decoded), 3), "snr_db": round(snr(reference, decoded), 3)}
    return out


def speed(decoders: dict[str, Decoder], bench: BenchParams, channels: int, subjects: list[str] | None = None,
          paired_frames: tuple[int, ...] | None = None) -> tuple[list[dict], list[dict]]:
    """Timing summaries, and the ratio of every pair of decoders, at every bench point. With
    `paired_frames`, the decoders are timed in the same rounds at those lengths only, and
    elsewhere the `subjects` alone (whose ratios no one reads there)."""
    timings, ratios = [], []
    for batch in bench.batches:
        for frames in bench.frames:
            log.info("bench torch: batch %d, %d frames", batch, frames)
            paired = paired_frames is None or frames in paired_frames
            group = decoders if paired else {n: d for n, d in decoders.items() if subjects is None or n in subjects}
            point = interleaved(group, batch, frames, channels, bench.warmup, bench.repeats)
            timings += [t.summary() for t in point.values()]
            names = list(point)
            ratios += [paired_ratio(point[a], point[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    return timings, ratios


SWEEP_CALLS = 3  # timed calls per length, after the first (timed apart: a new length's cost) and the warm-up
FLAG_FROM = 250  # frames (10 s): below it a call's fixed costs dominate its cost per second of audio
FLAG_RATIO = 1.25  # a length costing more per second of audio than this times the best is flagged


def sweep_frames(lo: int, hi: int, count: int) -> list[int]:
    """`count` lengths from lo to hi, evenly spaced, every other one odd (not only round sizes)."""
    out = []
    for i, value in enumerate(np.linspace(lo, hi, count)):
        frames = int(round(value))
        if i % 2 and frames < hi:
            frames |= 1
        out.append(frames)
    return sorted(set(out))


def sweep_flags(rows: list[dict]) -> list[str]:
    """Lengths from FLAG_FROM frames up that cost more than FLAG_RATIO x the best per second of
    audio, and lengths whose fastest call was slower than a longer length's slowest."""
    flags = []
    long = [r for r in rows if r["frames"] >= FLAG_FROM]
    if long:
        best = min(r["ms_per_audio_s"] for r in long)
        flags += [f"{r['frames']} frames: {r['ms_per_audio_s'] / best:.2f}x the best cost per second of audio"
                  for r in long if r["ms_per_audio_s"] > FLAG_RATIO * best]
    for i, r in enumerate(rows):
        slower = [o["frames"] for o in rows[i + 1:] if r["min_ms"] > o["max_ms"]]
        if slower:
            flags.append(f"{r['frames']} frames: slower than {slower[0]} frames (fastest call {r['min_ms']:.1f} ms "
                         "against its slowest)")
    return flags


def length_sweep(decoders: dict[str, Decoder], frames: list[int], channels: int, warmup: int = 1) -> dict:
    """Each decoder at each length: the first call there (a new length), `warmup` untimed
    calls, then SWEEP_CALLS timed calls; cost per second of audio; flags (sweep_flags)."""
    out = {}
    for name, decoder in decoders.items():
        rows = []
        for f in frames:
            if decoder.shape.frames is not None and not decoder.shape.frames[0] <= f <= decoder.shape.frames[1]:
                continue
            x = decoder.prepare(seeded_latent(1, channels, f, seed=f))
            first = warm_up(decoder, x, warmup)
            calls = [time_ms(decoder, x) for _ in range(SWEEP_CALLS)]
            median = float(np.median(calls))
            seconds = f * decoder.shape.hop / decoder.shape.sampling_rate
            rows.append({"frames": f, "first_call_ms": round(first, 3), "median_ms": round(median, 3),
                         "min_ms": round(min(calls), 3), "max_ms": round(max(calls), 3),
                         "ms_per_audio_s": round(median / seconds, 4)})
        out[name] = {"rows": rows, "flags": sweep_flags(rows)}
    return {"frames": frames, "calls": SWEEP_CALLS, "warmup": warmup, "flag_from_frames": FLAG_FROM, "flag_ratio": FLAG_RATIO,
            "engines": out}


class Phases:
    """Wall seconds of each phase of a bench, for its record and its log: where a stage's time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log.info("bench torch: %s took %.2f s", name, self.seconds[name])
        return out


def measure(decoders: dict[str, Decoder], bench: BenchParams, device: Any, holdout_dir: str | Path,
            reference_dir: str | Path, subjects: list[str] | None = None,
            paired_frames: tuple[int, ...] | None = None, phases: Phases | None = None) -> dict:
    """Every measurement of `decoders`: latency and the ratios of decoders timed in the same
    rounds (at `paired_frames` only, where given; speed()), and for `subjects` only (default:
    every decoder) device memory, held-out quality, streaming and the length sweep (the
    sweep's default: swept()). Each phase's wall seconds land in `phases`."""
    phases = phases or Phases()
    channels = next(iter(decoders.values())).shape.channels
    chosen = {name: d for name, d in decoders.items() if subjects is None or name in subjects}
    longest = seeded_latent(1, channels, max(bench.frames))
    memory = phases.run("memory (each subject's first call)", lambda: {
        name: decode_memory_gib(d, d.prepare(longest)) for name, d in chosen.items()})
    timings, ratios = phases.run("latency rounds", speed, decoders, bench, channels, subjects, paired_frames)
    quality = phases.run("held-out quality", heldout_quality, chosen, Path(holdout_dir), Path(reference_dir))
    stream = phases.run("streaming", lambda: {
        name: streaming(d, channels, bench.stream_frames, bench.stream_window, bench.stream_overlap,
                        warmup=bench.warmup) for name, d in chosen.items()})
    sweep = phases.run("length sweep", length_sweep, chosen if subjects is not None else swept(decoders),
                       sweep_frames(min(bench.frames), max(bench.frames), bench.sweep), channels,
                       bench.warmup) if bench.sweep else None
    return dict(
        timings=timings, ratios=ratios, device=devices.describe(device),
        memory={"frames": max(bench.frames), "device_memory_gib": memory,
                "method": "PyTorch's peak allocation during the decode beyond what was allocated before, plus "
                          "the decoder's weights" if device.type == "cuda" else "not measured: no GPU"},
        quality=quality, streaming=stream, sweep=sweep,
        runtimes={name: d.describe() for name, d in decoders.items()}, phase_seconds=phases.seconds)


def _not_in_runtimes(doc: dict, out_json: str | Path, plot_json: str | Path) -> dict:
    doc.update(timings=[], ratios=[], not_measured={"torch": "not measured: not in bench.runtimes"})
    write_json(out_json, doc)
    write_json(plot_json, [])
    return doc


def bench_torch(decoder_path: str | Path, bench: BenchParams, precisions: tuple[Precision, ...], *, device: Any,
                engines_dir: str | Path, holdout_dir: str | Path, reference_dir: str | Path,
                out_json: str | Path, plot_json: str | Path) -> dict:
    """The `bench_torch` stage (see the module docstring); returns the record written to `out_json`."""
    doc: dict = {"machine": fingerprint(), "bench": bench_params(bench), "compiled": [str(p) for p in precisions]}
    if Runtime.TORCH not in bench.runtimes:
        return _not_in_runtimes(doc, out_json, plot_json)
    phases = Phases()
    decoders, notes = phases.run("loading the model and packages", torch_decoders, Path(decoder_path), bench,
                                 precisions, Path(engines_dir), device)
    doc.update(measure(decoders, bench, device, holdout_dir, reference_dir, phases=phases), not_measured=notes)
    write_json(out_json, doc)
    write_json(plot_json, latency_rows(doc["timings"]))
    return doc


INT8_SERIES = "compiled {format} {variant}"  # an INT8 (FP8) engine's name in the records and the report
FP16_SERIES = "compiled fp16"  # the engine an INT8 engine is timed against


def series_name(variant: str, engine: str | Path) -> str:
    """`compiled int8 <variant>`, or `compiled fp8 <variant>` for an fp8 variant's engine (its record says)."""
    record = Path(engine).with_suffix(".json")
    precision = read_json(record).get("precision", "int8+fp16") if record.exists() else "int8+fp16"
    return INT8_SERIES.format(format=precision.split("+")[0], variant=variant)


def bench_int8(variant: str, bench: BenchParams, fp16: Decoder, *, device: Any, engine: str | Path,
               holdout_dir: str | Path, reference_dir: str | Path, phases: Phases | None = None) -> dict:
    """One INT8 variant's engine and the compiled fp16 engine `fp16` (loaded once by the
    stage) timed in the same rounds at the longest bench frames, the length the report's
    verdicts read; at the other bench frames the INT8 engine alone, and its memory, held-out
    quality, streaming and length sweep, which read against bench_torch's figures of the fp16
    engine (another run: no ratio is drawn from them). Returns the engine's record."""
    name = series_name(variant, engine)
    doc: dict = {"machine": fingerprint(), "bench": bench_params(bench), "variant": variant, "engine": name}
    phases = phases or Phases()
    # the seeded normal latent it is timed on may lie beyond the INT8 engine's range: no guard
    int8 = phases.run("loading the INT8 package", CompiledDecoder, engine, on_range="off")
    verdict = (max(bench.frames),)
    doc.update(measure({name: int8, FP16_SERIES: fp16}, bench, device, holdout_dir, reference_dir, subjects=[name],
                       paired_frames=verdict, phases=phases),
               not_measured={}, same_rounds={"frames": list(verdict), "with": FP16_SERIES,
                                             "elsewhere": "the INT8 engine alone; the fp16 engine's figures are "
                                                          "bench_torch's (reports/torch/bench.json)"})
    return doc


# What an INT8 engine's timings were measured with: the code the stage imports (dvc.yaml's code
# deps of bench_int8), and beside it, per engine, the two packages, the bench params and the device.
MEASURING_CODE = ("core", "data", "graph", "kernels", "measure", "metrics.py", "model", "runtime", "trt")


def timing_key(engine: Path, fp16_engine: Path, bench: BenchParams, device: Any, code: str) -> dict:
    """What an INT8 engine's record is valid for: while all of it holds, timing it again would
    measure the same thing (the packages by their build records' sha256)."""
    return {"engine_sha256": read_json(engine.with_suffix(".json"))["sha256"],
            "fp16_sha256": read_json(fp16_engine.with_suffix(".json"))["sha256"], "bench": bench_params(bench),
            "device": devices.describe(device), "code_sha256": code}


def bench_int8_engines(variants: tuple[str, ...], bench: BenchParams, *, device: Any, engines_dir: str | Path,
                       fp16_engine: str | Path, holdout_dir: str | Path, reference_dir: str | Path,
                       out_dir: str | Path) -> dict[str, str]:
    """The `bench_int8` stage: every INT8 engine of compile.int8 (`variants`) in one process,
    the fp16 engine loaded once (each engine in a stage of its own paid a process start-up and
    a load of the fp16 package: about 12 s of each 22 s on the lent H100). An engine whose
    record still holds (timing_key: same packages, bench params, device and measuring code)
    keeps it, so a changed variant re-times its own engine alone; records of variants no
    longer listed go. Writes <out_dir>/<variant>.json and .latency.json; returns variant ->
    "timed" or "kept"."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for record in out.glob("*.json"):
        if record.name.removesuffix(".json").removesuffix(".latency") not in variants:
            record.unlink()
    if Runtime.TORCH not in bench.runtimes:
        for variant in variants:
            _not_in_runtimes({"machine": fingerprint(), "bench": bench_params(bench), "variant": variant,
                              "engine": series_name(variant, Path(engines_dir) / f"{variant}.pt2")},
                             out / f"{variant}.json", out / f"{variant}.latency.json")
        return {variant: "timed" for variant in variants}
    code = source_digest(MEASURING_CODE)
    keys = {v: timing_key(Path(engines_dir) / f"{v}.pt2", Path(fp16_engine), bench, device, code) for v in variants}
    outcome = {v: "kept" if read_keyed(out / f"{v}.json", keys[v], "timing_key") else "timed" for v in variants}
    if "timed" not in outcome.values():
        return outcome
    stage = Phases()
    fp16 = stage.run("loading the fp16 package (once for the stage)", CompiledDecoder, fp16_engine)
    for variant in [v for v in variants if outcome[v] == "timed"]:
        phases = Phases()
        phases.seconds.update(stage.seconds)
        doc = bench_int8(variant, bench, fp16, device=device, engine=Path(engines_dir) / f"{variant}.pt2",
                         holdout_dir=holdout_dir, reference_dir=reference_dir, phases=phases)
        doc["timing_key"] = keys[variant]
        write_json(out / f"{variant}.json", doc)
        write_json(out / f"{variant}.latency.json", latency_rows([t for t in doc["timings"]
                                                                   if t["series"] == doc["engine"]]))
        if device.type == "cuda":  # the engine and its CUDA graphs go before the next one loads
            gc.collect()
            torch.cuda.empty_cache()
    log.info("bench_int8: %s", ", ".join(f"{v} {o}" for v, o in outcome.items()))
    return outcome
