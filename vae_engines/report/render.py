"""reports/report.md: tables, plots, the decision guide and provenance, from the records.

Every number printed here is read from a stage's output; every sentence about what ran
comes from the provenance written beside the number; an external figure names its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae_engines.core.fileio import atomic_path, read_json, write_json
from vae_engines.report.guide import decision_guide
from vae_engines.report.plots import latency_rows, render_plots
from vae_engines.report.records import VariantRecords, load_variants


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
    r = v.recipe
    return r.calibrator + (f" {r.percentile}" if r.percentile else "")


def _sources(v: VariantRecords) -> list[str]:
    data = v.quality_provenance.get("data", {})
    lines = []
    for role in ("calibration", "holdout"):
        d = data.get(role)
        if not d:
            continue
        lines.append(f"- {role.capitalize()}: {d['count']} windows of {d['frames']} frames, source `{d['source']}`, "
                     f"from {len(d['files'])} file(s) of `{d['path']}`"
                     + (f"; round-trip clips from {', '.join(f'`{f}`' for f in d['roundtrip_files'])}"
                        if d.get("roundtrip_files") else "") + ".")
    hold = data.get("holdout", {})
    if hold:
        lines.append(f"- Kept apart: {hold.get('split')}; {hold.get('disjoint')}.")
    return lines


def _quality_table(variants: list[VariantRecords]) -> list[str]:
    head = ["variant", "precision", "calibrator", "kept in float", "PSNR vs fp32", "PSNR vs fp16", "SNR vs fp32",
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


def render(variants: list[VariantRecords], frames: tuple[int, ...], plots: list[str], backend: str,
           sensitivity: dict | None) -> str:
    model = variants[0].quality_provenance.get("model", "unknown") if variants else "unknown"
    crest = variants[0].quality_provenance.get("crest_factor_db", {}).get("heldout_fp32") if variants else None
    out = ["# VAE decoder engines: which variant to ship", "",
           f"Model: **{model}**. Written by `dvc repro` (stage `report`) from the measured records under "
           f"reports/variants/ and engines/{backend}/; do not edit by hand.", ""]
    if "random weights" in model:
        out += ["> The model has random weights: its quality figures show how quantization treats this "
                "architecture, not how real ACE-Step weights fare. Point model.checkpoint at a real checkpoint for "
                "figures that matter.", ""]
    if variants:
        out += ["Data:", ""] + _sources(variants[0]) + [""]
    out += ["## Decision guide", ""] + decision_guide(variants, frames) + [""]
    out += ["## Quality", ""] + _quality_table(variants) + [""]
    out += [f"Peak PSNR = SNR + the reference's crest factor (20 log10 peak / RMS; {_fmt(crest)} dB for the held-out "
            "fp32 decodes here), as the reference project defined it. \"vs fp16\" compares with the fp16 graph "
            "computed in fp16. MR-STFT is Parallel WaveGAN's multi-resolution STFT distance (lower is better).", ""]
    out += ["## Speed", ""] + _speed_tables(variants, frames)
    out += ["## Engines", "", "| variant | backend | target | build (s) | plan (MB) | network layers | "
            "convolutions int8 / fp16 / fp32 |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        p = v.plan
        conv = p.get("precisions", {}).get("convolutions", {})
        out.append(f"| `{v.name}` | {p['backend']} {p['backend_version']} | {p['target']} | {p['build_seconds']} | "
                   f"{p['plan_bytes'] / 1e6:.1f} | {p['num_layers']} | {conv.get('int8', 0)} / {conv.get('fp16', 0)} / "
                   f"{conv.get('fp32', 0)} |")
    out += ["", "TensorRT latency and device memory: " + "; ".join(sorted({v.bench.get("tensorrt", "n/a")
                                                                          for v in variants})) + ".", ""]
    out += ["## Streaming", "", "A latent decoded in overlapping windows, as a streaming app does; each variant beside "
            "the fp32 reference timed in the same run.", "",
            "| run | series | window (frames) | calls | per call (ms) | real-time factor |", "|---|---|---|---|---|---|"]
    for v in variants:
        for name, s in v.bench.get("streaming", {}).items():
            out.append(f"| `{v.name}` | {name} | {s['window_frames']} (+{s['overlap_frames']} overlap) | {s['calls']} | "
                       f"{s['per_call_median_ms']:.1f} | {s['real_time_factor']:.3f} |")
    out.append("")
    if sensitivity:
        worst = sorted(sensitivity["layers"], key=lambda r: r["peak_psnr_db"])[:5]
        out += ["## Per-layer sensitivity", "",
                f"Each layer alone in INT8 ({sensitivity['calibrator']} ranges) on {sensitivity['latents']} held-out "
                "latents, against fp32. Most sensitive: " + ", ".join(
                    f"`{r['layer']}` {r['peak_psnr_db']:.1f} dB" for r in worst) + ". A ranking on the fixture is not "
                "the ranking of real weights.", ""]
    out += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots] + [""]
    out += ["## Listen", ""]
    for v in variants:
        files = v.quality_provenance.get("clips", {}).get("files", [])
        source = v.quality_provenance.get("clips", {}).get("from", "")
        out.append(f"- `{v.name}` ({source}): " + ", ".join(f"[{f[:-4]}](variants/{v.name}/clips/{f})" for f in files))
    out += ["", "## Provenance", ""]
    for v in variants:
        qp, b = v.quality_provenance, v.bench
        machine = qp.get("machine", {})
        out.append(f"- `{v.name}`: quality by {qp['runtime']['runtime']} ({qp['runtime'].get('device', '')}), "
                   f"machine {machine.get('cpu')} ({machine.get('cpu_count')} cores), GPU {machine.get('gpu')}; "
                   f"params hash quality {qp.get('params_hash')} / bench {b.get('params_hash')}")
    versions = variants[0].quality_provenance.get("machine", {}).get("versions", {}) if variants else {}
    out += ["- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if v), ""]
    return "\n".join(out)


def write_report(params: Any, *, reports: str | Path, sensitivity_json: str | Path | None,
                 out_md: str | Path, plots_dir: str | Path, latency_json: str | Path) -> Path:
    """The `report` stage: report.md, its PNG plots, and the latency rows for `dvc plots`."""
    variants = load_variants(Path(reports), params)
    sensitivity = read_json(sensitivity_json) if sensitivity_json else None
    plots = render_plots(variants, sensitivity, Path(plots_dir))
    write_json(latency_json, latency_rows(variants))
    text = render(variants, params.bench.frames, plots, params.build.backend, sensitivity)
    with atomic_path(out_md) as tmp:
        tmp.write_text(text)
    return Path(out_md)
