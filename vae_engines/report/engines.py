"""The report's PyTorch-engine sections, from bench_torch's and bench_int8's records: the length
sweep, and the INT8 engines beside their variants' simulated quality and the fp16 engine.

An INT8 engine (`compiled int8 <variant>`, compiled.int8) runs its variant's recipe on the
GPU's int8 tensor cores (an fp8 variant's, `compiled fp8 <variant>`, on its float8 ones); its
own decode of the held-out latents is scored against the same fp32 reference as the variant's
Q/DQ graph (evaluate), so the two figures sit side by side, and it is timed in the same rounds
as the compiled fp16 engine (bench_int8).
They should agree within AGREE_DB: the engine quantizes with the graph's scales and integer
weights, and differs only where fp16 arithmetic moves a value across an int8 rounding
boundary (tests/test_kernels.py).
"""

from __future__ import annotations

from vae_engines.report.records import FP16_ENGINE, TorchRecords, VariantRecords, range_label

AGREE_DB = 0.5


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def int8_engines(variants: list[VariantRecords], torch: TorchRecords) -> list[dict]:
    """Each INT8 engine (its bench_int8 record): speed against the compiled fp16 engine timed in
    the same rounds at the longest bench frames, memory, its quality and its variant's
    simulated quality, and the calibrated latent range it guards (runtime.guard)."""
    by_name = {v.name: v for v in variants}
    out = []
    for record in torch.int8:
        name, variant = record.get("engine"), record.get("variant")
        own = [t for t in record.get("timings", []) if t["series"] == name and t["batch"] == 1]
        if not own:
            continue
        frames = max(t["frames"] for t in own)
        timing = next(t for t in own if t["frames"] == frames)
        fp16 = next((t for t in record["timings"] if t["series"] == FP16_ENGINE and t["frames"] == frames
                     and t["batch"] == 1), None)
        engine_db = torch.quality(name)
        simulated = by_name[variant].psnr("fp32") if variant in by_name else None
        fmt = by_name[variant].format if variant in by_name else "int8"
        out.append({"engine": name, "variant": variant, "format": fmt, "frames": frames, "timing": timing,
                    "fp16": fp16,
                    "ratio": torch.ratio(name, FP16_ENGINE, frames), "memory_gib": torch.memory_gib(name),
                    "engine_db": engine_db, "simulated_db": simulated,
                    "input_range": torch.described(name).get("calibrated_input_range"),
                    "agree": None if engine_db is None or simulated is None else abs(engine_db - simulated) <= AGREE_DB})
    return out


def int8_engines_section(variants: list[VariantRecords], torch: TorchRecords) -> list[str]:
    rows = int8_engines(variants, torch)
    if not rows:
        return []
    device = torch.device()
    fp8 = any(r["format"] == "fp8" for r in rows)
    out = [f"## INT8{' / FP8' if fp8 else ''} engines (fused kernels)", "",
           f"Each INT8 variant's own engine on {device.get('name', device.get('device'))}: int8 x int8 convolutions "
           + ("(fp8 e4m3 x e4m3 for an fp8 variant) " if fp8 else "")
           + f"with the variant's scales (its Q/DQ graph's), timed in the same rounds as `{FP16_ENGINE}` (stage "
           "bench_int8); its decode of the held-out latents beside the variant's simulated figure (the Q/DQ graph, "
           f"evaluate). They agree within {AGREE_DB} dB or the row says so. Each refuses a latent beyond "
           "`range_guard` times its calibrated latent range (README, \"Run an engine in your app\").", "",
           f"| engine | median ms (p10-p90) | vs `{FP16_ENGINE}`, same rounds | device memory (GiB) | engine PSNR vs "
           "fp32 | simulated (Q/DQ graph) | agree | calibrated latent range |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, ratio = r["timing"], r["ratio"]
        speed = "n/a" if ratio is None else (f"{ratio['median_ratio']:.2f}x [{ratio['ci95'][0]:.2f}-"
                                             f"{ratio['ci95'][1]:.2f}] {ratio['verdict']}")
        agree = ("n/a" if r["agree"] is None else "yes" if r["agree"]
                 else f"**no**: {abs(r['engine_db'] - r['simulated_db']):.2f} dB apart")
        out.append(f"| `{r['engine']}` | {t['median_ms']:.1f} ({t['p10_ms']:.1f}-{t['p90_ms']:.1f}) at "
                   f"{r['frames']} fr | {speed} | {r['memory_gib'] if r['memory_gib'] is not None else 'n/a'} | "
                   f"{_fmt(r['engine_db'])} | {_fmt(r['simulated_db'])} | {agree} | {range_label(r['input_range'])} |")
    if any(r["agree"] is False for r in rows):
        out += ["", "Where an engine and its graph disagree by more than the rounding both allow, the engine's "
                "figure is the one to trust (it is what runs); the graph is what TensorRT would build. "
                "`python benchmarks/int8_agreement.py` compares the two layer by layer (where they part, which "
                "inputs saturate)."]
    return out + [""]


def sweep_section(torch: TorchRecords) -> list[str]:
    engines = torch.sweeps()
    if not engines:
        return []
    records = [r for r in (torch.bench, *torch.int8) if r and r.get("sweep")]
    sweep = records[0]["sweep"]
    frames = sorted({row["frames"] for e in engines.values() for row in e["rows"]})
    names = list(engines)
    out = ["## Cost by length", "",
           f"Each engine at {len(frames)} lengths across the bench frames: the median of "
           f"{sweep['calls']} calls after a first call at that length, and milliseconds per second of audio. "
           f"Flagged: a length from {sweep['flag_from_frames']} frames up that costs more than "
           f"{sweep['flag_ratio']}x the best per second of audio, or that is slower than a longer length.", "",
           "| frames | " + " | ".join(f"`{n}` ms (ms per s of audio)" for n in names) + " |",
           "|---|" + "---|" * len(names)]
    for f in frames:
        cells = []
        for n in names:
            row = next((r for r in engines[n]["rows"] if r["frames"] == f), None)
            cells.append("-" if row is None else f"{row['median_ms']:.1f} ({row['ms_per_audio_s']:.3f})")
        out.append(f"| {f} | " + " | ".join(cells) + " |")
    out.append("")
    for n in names:
        flags = engines[n]["flags"]
        first = max((r["first_call_ms"] - r["median_ms"] for r in engines[n]["rows"]), default=0.0)
        out.append(f"- `{n}`: " + ("; ".join(flags) if flags else "no length flagged")
                   + f"; a first call at a new length cost at most {first:.1f} ms more than the calls after it.")
    return out + [""]
