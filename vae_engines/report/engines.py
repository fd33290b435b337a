"""The report's PyTorch-engine sections, from bench_torch's record: the length sweep, and the
INT8 engines beside their variants' simulated quality and the best fp16 engine of the run.

An INT8 engine (`compiled int8 <variant>`, compiled.int8) runs its variant's recipe on the
GPU's int8 tensor cores; its own decode of the held-out latents is scored against the same
fp32 reference as the variant's Q/DQ graph (evaluate), so the two figures sit side by side.
They should agree within AGREE_DB: the engine quantizes with the graph's scales and integer
weights, and differs only where fp16 arithmetic moves a value across an int8 rounding
boundary (tests/test_kernels.py).
"""

from __future__ import annotations

from vae_engines.report.records import VariantRecords

AGREE_DB = 0.5
INT8_PREFIX = "compiled int8 "


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(torch_bench: dict, subject: str, reference: str, frames: int) -> dict | None:
    """subject against reference at `frames` (> 1: subject faster), from either orientation."""
    for r in torch_bench.get("ratios", []):
        if r["frames"] != frames or r["batch"] != 1:
            continue
        if (r["subject"], r["reference"]) == (subject, reference):
            return r
        if (r["subject"], r["reference"]) == (reference, subject):
            flip = {"faster": "slower", "slower": "faster"}.get(r["verdict"], r["verdict"])
            return {**r, "subject": subject, "reference": reference, "median_ratio": 1 / r["median_ratio"],
                    "ci95": [1 / r["ci95"][1], 1 / r["ci95"][0]], "verdict": flip}
    return None


def best_fp16(torch_bench: dict, frames: int) -> dict | None:
    """The fastest fp16 PyTorch decoder of the run at `frames` (compiled or eager)."""
    rows = [t for t in torch_bench.get("timings", []) if t["frames"] == frames and t["batch"] == 1
            and t["series"].endswith("fp16")]
    return min(rows, key=lambda t: t["median_ms"]) if rows else None


def int8_engines(variants: list[VariantRecords], torch_bench: dict | None) -> list[dict]:
    """Each INT8 engine: speed against the best fp16 engine at the longest bench frames,
    memory, its quality and its variant's simulated quality."""
    if not torch_bench or not torch_bench.get("timings"):
        return []
    frames = max(t["frames"] for t in torch_bench["timings"])
    fp16 = best_fp16(torch_bench, frames)
    by_name = {v.name: v for v in variants}
    out = []
    for name in torch_bench.get("runtimes", {}):
        if not name.startswith(INT8_PREFIX):
            continue
        variant = name[len(INT8_PREFIX):]
        timing = next((t for t in torch_bench["timings"] if t["series"] == name and t["frames"] == frames
                       and t["batch"] == 1), None)
        engine_db = torch_bench.get("quality", {}).get(name, {}).get("peak_psnr_db")
        simulated = by_name[variant].psnr("fp32") if variant in by_name else None
        out.append({"engine": name, "variant": variant, "frames": frames, "timing": timing, "fp16": fp16,
                    "ratio": _ratio(torch_bench, name, fp16["series"], frames) if fp16 else None,
                    "memory_gib": torch_bench.get("memory", {}).get("device_memory_gib", {}).get(name),
                    "engine_db": engine_db, "simulated_db": simulated,
                    "agree": None if engine_db is None or simulated is None else abs(engine_db - simulated) <= AGREE_DB})
    return out


def int8_engines_section(variants: list[VariantRecords], torch_bench: dict | None) -> list[str]:
    rows = int8_engines(variants, torch_bench)
    if not rows:
        return []
    device = (torch_bench or {}).get("device", {})
    out = ["## INT8 engines (fused kernels)", "",
           f"Each INT8 variant's own engine on {device.get('name', device.get('device'))}: int8 x int8 convolutions "
           "with the variant's scales (its Q/DQ graph's), timed in the same rounds as the fp16 engines; its decode "
           f"of the held-out latents beside the variant's simulated figure (the Q/DQ graph, evaluate). They agree "
           f"within {AGREE_DB} dB or the row says so.", "",
           "| engine | median ms | vs the fastest fp16 | device memory (GiB) | engine PSNR vs fp32 | simulated "
           "(Q/DQ graph) | agree |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        t, ratio = r["timing"], r["ratio"]
        speed = "n/a" if ratio is None else (f"{ratio['median_ratio']:.2f}x [{ratio['ci95'][0]:.2f}-"
                                             f"{ratio['ci95'][1]:.2f}] {ratio['verdict']} than `{r['fp16']['series']}`")
        agree = {None: "n/a", True: "yes", False: f"**no**: {abs(r['engine_db'] - r['simulated_db']):.2f} dB apart"}[
            r["agree"]]
        ms = "n/a" if t is None else f"{t['median_ms']:.1f}"
        out.append(f"| `{r['engine']}` | {ms} ({r['frames']} fr) | "
                   f"{speed} | {r['memory_gib'] if r['memory_gib'] is not None else 'n/a'} | "
                   f"{_fmt(r['engine_db'])} | {_fmt(r['simulated_db'])} | {agree} |")
    if any(r["agree"] is False for r in rows):
        out += ["", "Where an engine and its graph disagree by more than the rounding both allow, the engine's "
                "figure is the one to trust (it is what runs); the graph is what TensorRT would build."]
    return out + [""]


def sweep_section(torch_bench: dict | None) -> list[str]:
    sweep = (torch_bench or {}).get("sweep")
    if not sweep:
        return []
    engines = sweep["engines"]
    names = list(engines)
    out = ["## Cost by length", "",
           f"Each engine at {len(sweep['frames'])} lengths across the bench frames: the median of "
           f"{sweep['calls']} calls after a first call at that length, and milliseconds per second of audio. "
           f"Flagged: a length from {sweep['flag_from_frames']} frames up that costs more than "
           f"{sweep['flag_ratio']}x the best per second of audio, or that is slower than a longer length.", "",
           "| frames | " + " | ".join(f"`{n}` ms (ms per s of audio)" for n in names) + " |",
           "|---|" + "---|" * len(names)]
    for f in sweep["frames"]:
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
