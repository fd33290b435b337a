"""reports/report.md: tables, plots, the decision guide and provenance, from the records.

Every number printed here is read from a stage's output; every sentence about what ran
comes from the provenance written beside the number; an external figure names its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_engines.core.fileio import atomic_path, read_json, write_json
from vae_engines.report.engines import int8_engines_section, sweep_section
from vae_engines.report.guide import decision_guide
from vae_engines.report.plots import latency_rows, render_plots
from vae_engines.report.records import TorchRecords, VariantRecords, load_torch_records, load_variants
from vae_engines.report.ship import ship_lines


def _fmt(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _kept(v: VariantRecords) -> str:
    if not v.is_int8:
        return "all (fp16)"
    kept = v.quality_provenance.get("kept_in_float") or []
    return ", ".join(f"`{k}`" for k in kept) if kept else "none"


def _calibrator(v: VariantRecords) -> str:
    if not v.is_int8:
        return "-"
    percentile = v.label("percentile")
    return (f"{v.label('calibrator')}" + (f" {percentile}" if percentile else "")
            + f", {v.label('placement')}, {v.range_label()}")


def data_sources(calibration_dir: Path, holdout_dir: Path) -> dict:
    """Where the calibration and held-out data came from, and how they were kept apart (their manifests)."""
    out = {}
    for role, directory in (("calibration", calibration_dir), ("holdout", holdout_dir)):
        m = read_json(Path(directory) / "manifest.json")
        out[role] = {"source": m.get("source"), "path": m.get("path"), "frames": m.get("frames"),
                     "count": m.get("count"), "files": sorted({w["file"] for w in m.get("windows", [])}),
                     "split": m.get("split", {}).get("rule"), "disjoint": m.get("split", {}).get("disjoint"),
                     "roundtrip_files": [c["file"] for c in (m.get("roundtrip") or {}).get("clips", [])]}
    return out


def _sources(data: dict) -> list[str]:
    lines = []
    for role in ("calibration", "holdout"):
        d = data[role]
        lines.append(f"- {role.capitalize()}: {d['count']} windows of {d['frames']} frames, source `{d['source']}`, "
                     f"from {len(d['files'])} file(s) of `{d['path']}`"
                     + (f"; round-trip clips from {', '.join(f'`{f}`' for f in d['roundtrip_files'])}"
                        if d.get("roundtrip_files") else "") + ".")
    lines.append(f"- Kept apart: {data['holdout'].get('split')}; {data['holdout'].get('disjoint')}.")
    return lines


def _quality_table(variants: list[VariantRecords]) -> list[str]:
    head = ["variant", "precision", "calibrator, placement", "kept in float", "PSNR vs fp32", "PSNR vs fp16", "SNR vs fp32",
            "SI-SDR vs fp32", "MR-STFT vs fp32", "round-trip PSNR vs audio", "plan (MB)", "quality measured by"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        rt = v.quality_provenance["runtime"]
        out.append("| " + " | ".join([
            f"`{v.name}`", v.quality_provenance["precision"], _calibrator(v), _kept(v), _fmt(v.psnr("fp32")),
            _fmt(v.psnr("fp16")), _fmt(v.psnr("fp32", key="snr_db")), _fmt(v.psnr("fp32", key="si_sdr_db")),
            _fmt(v.psnr("fp32", key="mr_stft"), 4), _fmt(v.psnr("audio", "roundtrip")),
            _fmt(v.plan["plan_bytes"] / 1e6), f"{rt['runtime']} on {rt.get('device', 'gpu')}: {rt['executed']}",
        ]) + " |")
    return out


def _speed_tables(variants: list[VariantRecords], frames: tuple[int, ...]) -> list[str]:
    out = []
    for v in variants:
        ratios = {(r["subject"], r["reference"], r["frames"]): r for r in v.bench.get("ratios", []) if r["batch"] == 1}
        series = [t for t in v.bench.get("timings", []) if t["batch"] == 1]
        if not series:
            continue
        out += [f"**`{v.name}`** (one run; every ratio compares series timed in the same rounds):", "",
                "| series | executed | " + " | ".join(f"{f} fr: median ms (p10-p90)" for f in frames) + " |",
                "|---|---|" + "---|" * len(frames)]
        for name in dict.fromkeys(t["series"] for t in series):
            cells = []
            for f in frames:
                t = next((t for t in series if t["series"] == name and t["frames"] == f), None)
                cells.append("n/a" if t is None else f"{t['median_ms']:.1f} ({t['p10_ms']:.1f}-{t['p90_ms']:.1f})")
            executed = v.bench.get("runtimes", {}).get(name, {}).get("executed", "")
            out.append(f"| {name} | {executed} | " + " | ".join(cells) + " |")
        verdicts = []
        for (subject, reference, f), r in sorted(ratios.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            verdicts.append(f"{subject} vs {reference} at {f} frames: {r['median_ratio']:.2f}x "
                            f"[{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}] {r['verdict']}")
        out += [""] + [f"- {line}" for line in verdicts] + [""]
        for name, why in sorted(v.bench.get("not_measured", {}).items()):
            out.append(f"- {name}: {why}")
        out.append("")
    return out


def _engines_table(variants: list[VariantRecords]) -> list[str]:
    out = ["## Engines", "", "What each plan's backend does with its INT8 (or FP8), from the plan's own build record, "
           "and the measured plan size.", "", "| variant | backend | target | build (s) | plan (MB) | vs fp16 plan | "
           "convolutions int8 / fp8 / fp16 / fp32 (as parsed) | what the INT8 (FP8) does on this backend |",
           "|---|---|---|---|---|---|---|---|"]
    for v in variants:
        p = v.plan
        conv = p.get("precisions", {}).get("convolutions", {})
        ratio = v.bench.get("memory", {}).get("plan_vs_fp16")
        out.append(f"| `{v.name}` | {p['backend']} {p['backend_version']} | {p['target']} | {p['build_seconds']} | "
                   f"{p['plan_bytes'] / 1e6:.1f} | {'-' if ratio is None else f'{ratio:.0%}'} | {conv.get('int8', 0)} / "
                   f"{conv.get('fp8', 0)} / {conv.get('fp16', 0)} / {conv.get('fp32', 0)} | "
                   f"{p.get('int8_execution', '')} |")
    out += ["", "TensorRT latency and device memory: " + "; ".join(sorted({v.bench.get("tensorrt", "n/a")
                                                                          for v in variants})) + ".", ""]
    return out


def _torch_section(torch: TorchRecords) -> list[str]:
    bench = torch.bench
    if not bench or not bench.get("timings"):
        why = (bench or {}).get("not_measured", {}).get("torch", "no bench_torch record")
        return ["## PyTorch engines", "", f"Not measured: {why}.", ""]
    device = bench.get("device", {})
    frames = sorted({t["frames"] for t in bench["timings"]})
    memory = bench.get("memory", {})
    out = ["## PyTorch engines", "", f"Eager PyTorch (what an app runs today) and the compiled engines, on "
           f"{device.get('name', device.get('device'))} ({device.get('torch', '')}), timed in the same rounds "
           f"(stage bench_torch; each INT8 engine in its own run beside `compiled fp16`: \"INT8 engines\"). Device "
           f"memory: one decode of {memory.get('frames')} frames ({memory.get('method')}).", "",
           "| engine | executed | " + " | ".join(f"{f} fr: median ms (p10-p90)" for f in frames)
           + " | device memory (GiB) | peak PSNR vs fp32 (dB) |", "|---|---|" + "---|" * len(frames) + "---|---|"]
    for name, described in bench.get("runtimes", {}).items():
        cells = []
        for f in frames:
            t = next((t for t in bench["timings"] if t["series"] == name and t["frames"] == f), None)
            cells.append("n/a" if t is None else f"{t['median_ms']:.1f} ({t['p10_ms']:.1f}-{t['p90_ms']:.1f})")
        mem = memory.get("device_memory_gib", {}).get(name)
        quality = bench.get("quality", {}).get(name, {}).get("peak_psnr_db")
        out.append(f"| {name} | {described.get('executed', '')} | " + " | ".join(cells) +
                   f" | {'n/a' if mem is None else mem} | {_fmt(quality)} |")
    out.append("")
    for r in bench.get("ratios", []):
        if r["frames"] == max(frames) and r["batch"] == 1:
            out.append(f"- {r['subject']} vs {r['reference']} at {r['frames']} frames: {r['median_ratio']:.2f}x "
                       f"[{r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}] {r['verdict']}")
    out += [f"- {name}: {why}" for name, why in sorted(bench.get("not_measured", {}).items())] + [""]
    return out


def _streaming_table(variants: list[VariantRecords], torch: TorchRecords) -> list[str]:
    out = ["## Streaming", "", "A latent decoded in overlapping windows and stitched, as a streaming app does "
           "(runtime.stream): per-call latency, real-time factor (decode time / audio time), device memory of the "
           "windowed decode, and the stitched audio against the same engine's full decode.", "",
           "| run | engine | window (frames) | calls | per call (ms) | real-time factor | device memory (GiB) | "
           "stitched vs full (dB) |", "|---|---|---|---|---|---|---|---|"]
    runs = [(f"`{v.name}`", v.bench.get("streaming", {})) for v in variants]
    runs += [("PyTorch", record.get("streaming", {})) for record in (torch.bench, *torch.int8) if record]
    for run, records in runs:
        for name, s in records.items():
            psnr = s.get("stitched_psnr_vs_full_db")
            out.append(f"| {run} | {name} | {s['window_frames']} (+{s['overlap_frames']} overlap) | {s['calls']} | "
                       f"{s['per_call_median_ms']:.1f} | {s['real_time_factor']:.3f} | "
                       f"{s.get('peak_device_memory_gib') or 'n/a'} | "
                       f"{psnr if isinstance(psnr, str) else _fmt(psnr)} |")
    return out + [""]


def _header(variants: list[VariantRecords], backend: str) -> list[str]:
    model = variants[0].quality_provenance.get("model", "unknown") if variants else "unknown"
    out = ["# VAE decoder engines: which variant to ship", "",
           f"Model: **{model}**. Written by `dvc repro` (stage `report`) from the measured records under "
           f"reports/variants/ and engines/{backend}/; do not edit by hand.", ""]
    if "random weights" in model:
        out += ["> The model has random weights: its quality figures show how quantization treats this "
                "architecture, not how real ACE-Step weights fare. Point model.checkpoint at a real checkpoint for "
                "figures that matter.", ""]
    return out


def _quality_section(variants: list[VariantRecords]) -> list[str]:
    crest = variants[0].quality_provenance.get("crest_factor_db", {}).get("heldout_fp32") if variants else None
    return ["## Quality", ""] + _quality_table(variants) + ["", (
        f"Peak PSNR = SNR + the reference's crest factor (20 log10 peak / RMS; {_fmt(crest)} dB for the held-out "
        "fp32 decodes here), as the reference project defined it. \"vs fp16\" compares with the fp16 graph "
        "computed in fp16. MR-STFT is Parallel WaveGAN's multi-resolution STFT distance (lower is better)."), ""]


def _speed_section(variants: list[VariantRecords], frames: tuple[int, ...]) -> list[str]:
    speed = _speed_tables(variants, frames)
    if not speed:  # no plan was timed here: say why rather than leave the heading empty
        status = sorted({v.bench.get("tensorrt", "not measured") for v in variants}) or ["no variants"]
        speed = [f"TensorRT plans: {'; '.join(status)}. The PyTorch engines that ran here are timed below "
                 "(\"PyTorch engines\", \"Cost by length\").", ""]
    return ["## Speed", ""] + speed


def _sensitivity_section(sensitivity: dict | None) -> list[str]:
    if not sensitivity:
        return []
    worst = sorted(sensitivity["layers"], key=lambda r: r["peak_psnr_db"])[:5]
    return ["## Per-layer sensitivity", "",
            f"Each layer alone in INT8 ({sensitivity['calibrator']} ranges) on {sensitivity['latents']} held-out "
            "latents, against fp32. Most sensitive: " + ", ".join(
                f"`{r['layer']}` {r['peak_psnr_db']:.1f} dB" for r in worst) + ". A ranking on the fixture is not "
            "the ranking of real weights.", ""]


def _listen(variants: list[VariantRecords]) -> list[str]:
    out = ["## Listen", ""]
    for v in variants:
        files = v.quality_provenance.get("clips", {}).get("files", [])
        source = v.quality_provenance.get("clips", {}).get("from", "")
        out.append(f"- `{v.name}` ({source}): " + ", ".join(f"[{f[:-4]}](variants/{v.name}/clips/{f})" for f in files))
    return out + [""]


def _provenance(variants: list[VariantRecords], torch: TorchRecords) -> list[str]:
    out = ["## Provenance", ""]
    for v in variants:
        qp, b = v.quality_provenance, v.bench
        machine = qp.get("machine", {})
        bench = b.get("bench", {})
        recipe = ", ".join(f"{k} {qp[k]}" for k in ("calibrator", "placement", "quantization") if qp.get(k))
        out.append(f"- `{v.name}`: quality by {qp['runtime']['runtime']} ({qp['runtime'].get('device', '')}), "
                   f"machine {machine.get('cpu')} ({machine.get('cpu_count')} cores), GPU {machine.get('gpu')}; "
                   f"recipe: {recipe or 'the fp16 graph'}; bench: frames {bench.get('frames')}, "
                   f"{bench.get('repeats')} rounds, runtimes {bench.get('runtimes')}")
    for record in (torch.bench, *torch.int8):
        if not record or not record.get("timings"):
            continue
        machine, device, bench = record.get("machine", {}), record.get("device", {}), record.get("bench", {})
        what = f"`{record['engine']}` beside `compiled fp16` (bench_int8)" if record.get("engine") else (
            "eager and compiled PyTorch engines (bench_torch)")
        out.append(f"- {what}: {device.get('name', device.get('device'))} ({device.get('torch', '')}), machine "
                   f"{machine.get('cpu')} ({machine.get('cpu_count')} cores); bench: frames {bench.get('frames')}, "
                   f"{bench.get('repeats')} rounds")
    versions = variants[0].quality_provenance.get("machine", {}).get("versions", {}) if variants else {}
    return out + ["- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v), ""]


def render(variants: list[VariantRecords], frames: tuple[int, ...], plots: list[str], backend: str,
           sensitivity: dict | None, torch: TorchRecords, data: dict, quality_target_db: float = 40.0) -> str:
    """report.md from the records: the first screen, then the sections in reading order."""
    out = _header(variants, backend) + ship_lines(variants, torch, frames, quality_target_db)
    out += ["Data:", ""] + _sources(data) + [""]
    out += ["## Decision guide", ""] + decision_guide(variants, frames, torch) + [""]
    out += _quality_section(variants) + _speed_section(variants, frames) + _engines_table(variants)
    out += _torch_section(torch) + int8_engines_section(variants, torch) + sweep_section(torch)
    out += _streaming_table(variants, torch) + _sensitivity_section(sensitivity)
    out += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    out += _listen(variants) + _provenance(variants, torch)
    return "\n".join(out)


def write_report(variant_names: list[str], frames: tuple[int, ...], backend: str, *, reports: str | Path,
                 torch_json: str | Path, sensitivity_json: str | Path | None, calibration_dir: str | Path,
                 holdout_dir: str | Path, out_md: str | Path, plots_dir: str | Path, latency_json: str | Path,
                 int8_engines: list[str | Path] = (), quality_target_db: float = 40.0) -> Path:
    """The `report` stage: report.md, its PNG plots, and the latency rows for `dvc plots`.
    int8_engines: the bench_int8 records of the INT8 engines compile.int8 names."""
    variants = load_variants(Path(reports), variant_names)
    torch = load_torch_records(torch_json, list(int8_engines))
    sensitivity = read_json(sensitivity_json) if sensitivity_json else None
    plots = render_plots(variants, torch, sensitivity, Path(plots_dir))
    write_json(latency_json, latency_rows(variants, torch))
    text = render(variants, frames, plots, backend, sensitivity, torch,
                  data_sources(Path(calibration_dir), Path(holdout_dir)), quality_target_db)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    return Path(out_md)
